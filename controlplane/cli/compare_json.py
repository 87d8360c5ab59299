"""What `controlplane runs compare` says for a script or a CI gate: the notes on runs that did not finish, on
intervals over fewer requests than each run completed (or replayed), on a side of several runs that is not one
configuration over seeds and on two replays that should have been the same and differ (a plugin that is not
reproducible) (on stderr, as every note, and in ``--json``'s ``notes``), and the ``--json`` document (docs/sweeps.md
lists its keys)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from controlplane.cli.compare_ci import cost_diffs, side_by_side_diffs
from controlplane.cli.runs_notes import same_requests, slo_targets, targets_differ

__all__ = ["compare_document", "covers_note", "mixed_side_notes", "replayed_note", "reproducibility_note",
           "status_notes"]

_STOPPED = {"failed": "failed", "crashed": "crashed", "interrupted": "was interrupted"}


def status_notes(runs: Sequence[dict[str, Any]]) -> list[str]:
    """A note for each run that did not finish (a trace that failed mid-replay, a Ctrl-C): it stopped, where, with
    its error, and its figures are those of what it replayed before (not its whole trace's)."""
    return [_status_note(run) for run in runs if run.get("status") != "finished"]


def _status_note(run: dict[str, Any]) -> str:
    summary = run.get("summary") or {}
    status, error = run.get("status"), (summary.get("error") or "").rstrip(": ")
    at, n = summary.get("failed_at_s", summary.get("interrupted_at_s")), summary.get("num_requests")
    when = f" at {at:g} s" if isinstance(at, (int, float)) else ""
    replayed = f"the {n:,} requests" if isinstance(n, int) else "the requests"
    return (f"note: run {run['id']} {_STOPPED.get(status, f'is {status}')}{when}, not finished"
            + (f" ({error})" if error else "")
            + f": its figures are those of {replayed} it replayed before it stopped, not its whole trace's")


def covers_note(metrics: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> str:
    """A note when metrics' ``a``, ``b`` and intervals are over the requests both runs completed (or replayed), not
    every request each run completed (a paired comparison of runs that completed different requests:
    `controlplane.compare.MetricDiff.covers`), saying how many each completed and where its own values are; ''
    when none is."""
    marked = [m for m in metrics if m.get("covers")]
    if not marked:
        return ""
    completed = ", ".join(f"run {r['id']}: {(r.get('summary') or {}).get('num_completed', 0):,}" for r in runs)
    several = any(m.get("method") == "hierarchical" for m in marked)  # (several runs a side: every run's, not paired)
    over, how, own = (("every run", "each run's values over them", "each side's runs' own values") if several
                      else ("both runs", "paired", "the runs' own values"))
    return (f"note: {len(marked)} of the {len(metrics)} metrics (those with `covers`, which says which requests) "
            f"are over the requests {over} completed (or replayed), not every request each run completed "
            f"({completed} completed), {how}: their a, b and intervals are not {own} (those are "
            "their a_whole and b_whole, and side_by_side); a run that completed fewer requests can read faster over "
            "those it did")


#: A run config's sections that do not decide a simulated run's results: its name, where it is stored, its process.
_NOT_RESULTS = frozenset({"name", "storage", "process"})
#: What may differ between the runs of one side, one configuration over seeds: its seed, and how it read its trace
#: (the workload's note says when the runs replayed different requests).
_NOT_CONFIGURATION = _NOT_RESULTS | {"seed", "trace_read"}


def replayed_note(samples_a: Sequence[Any], samples_b: Sequence[Any]) -> str:
    """The note in place of the workloads' when the intervals are over the requests every run replayed
    (`controlplane.compare.every_run_replayed`: a run of a longer ``--limit`` beside a shorter one), not each run's
    own; '' when they are not."""
    from controlplane.compare import every_run_replayed

    shared = every_run_replayed(samples_a, samples_b)
    if shared is None:
        return ""
    if len(samples_a) == len(samples_b) == 1:
        return f"note: the intervals compare {shared[2]}, paired; the side-by-side table is each run whole"
    return (f"note: the intervals compare {shared[2]}, each run over them; the side-by-side table is each side's "
            "runs whole (their mean)")


def mixed_side_notes(runs_a: Sequence[dict[str, Any]], runs_b: Sequence[dict[str, Any]]) -> list[str]:
    """A note for each side of several runs that is not one configuration over seeds, as the intervals over seeds
    take it to be: runs whose configs differ beyond their seed, name, storage, process and trace reading (another
    policy, setting or cluster), and a seed run more than once by one configuration (runs of two configurations
    that share a seed are the first note's, not repeats)."""
    from controlplane.config_dotted import flat_keys

    def settings(run: dict[str, Any]) -> dict[str, Any]:
        config = run.get("config") or {}
        return {key: value for k, v in config.items() if k not in _NOT_CONFIGURATION
                for key, value in (flat_keys(v, k) if isinstance(v, dict) and v else {k: v}).items()}

    notes = []
    for side, runs in (("A", runs_a), ("B", runs_b)):
        if len(runs) < 2:
            continue
        configs = [settings(run) for run in runs]
        first = configs[0]
        for run, other in zip(runs[1:], configs[1:]):
            keys = sorted(k for k in first.keys() | other.keys() if first.get(k, _ABSENT) != other.get(k, _ABSENT))
            if keys:
                shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
                notes.append(f"note: side {side}'s runs are not one configuration over seeds: run {run['id']}'s config "
                             f"differs from run {runs[0]['id']}'s ({shown}); the intervals over seeds take them for "
                             "seeds of one configuration, so they mix the configurations' effects: compare one "
                             "configuration's runs a side")
                break
        seeds: dict[tuple[str, Any], list[int]] = {}  # (the configuration, the seed) -> its runs
        for run, config in zip(runs, configs):
            if run.get("seed") is not None:
                same = json.dumps(config, sort_keys=True, default=str)
                seeds.setdefault((same, run["seed"]), []).append(run["id"])
        for (_, seed), ids in seeds.items():
            if len(ids) > 1:
                notes.append(f"note: side {side} runs seed {seed} more than once (runs {', '.join(map(str, ids))}): "
                             "the intervals over seeds take its runs for independent seeds, which runs of one seed "
                             "are not (a simulated replay of one configuration and seed repeats its results), so "
                             "they are narrower than the seeds' variation warrants")
    return notes


_ABSENT = object()
#: Observers the core itself registers (the run's recorder, `controlplane.testing`'s event log): controlplane's code,
#: stored without a version.
_CORE_OBSERVERS = frozenset({"sql-recorder", "event-log"})
#: The summary figures that tell whether two replays came out the same, in the order the note names the first.
_RESULTS = ("num_completed", "num_rejected", "num_failed", "num_blocked", "num_cancelled", "num_preemptions",
            "num_plugin_errors", "cache_hits", "num_scale_events", "slo_attainment", "ttft_mean_s", "ttft_p99_s",
            "tpot_mean_s", "tpot_p99_s", "e2e_mean_s", "e2e_p99_s", "queue_mean_s", "queue_p99_s", "output_tokens",
            "gpu_seconds", "gpu_busy_seconds")


def reproducibility_note(runs_a: Sequence[dict[str, Any]], runs_b: Sequence[dict[str, Any]], engine: Any) -> str:
    """A note when one simulated run a side had everything that decides its results the same (config, seed, trace
    and how it was read, the same stored requests, plugins with their versions and settings: the built-ins'
    version is controlplane's) and the results still differ: a replay is deterministic, so some plugin read the wall
    clock, the global random module or state outside the run, and the comparison's verdicts are that noise. ''
    otherwise (checked in that order, the stored requests last: a query of both runs')."""
    if len(runs_a) != 1 or len(runs_b) != 1:
        return ""
    a, b = runs_a[0], runs_b[0]
    if a["id"] == b["id"] or not all(r.get("mode") == "sim" and r.get("status") == "finished" for r in (a, b)):
        return ""
    if (a.get("seed"), a.get("trace"), a.get("trace_format"), a.get("plugins")) != (
            b.get("seed"), b.get("trace"), b.get("trace_format"), b.get("plugins")):
        return ""
    config_a, config_b = ({k: v for k, v in (r.get("config") or {}).items() if k not in _NOT_RESULTS} for r in (a, b))
    if not config_a or config_a != config_b:
        return ""
    summary_a, summary_b = a.get("summary") or {}, b.get("summary") or {}
    differ = [k for k in _RESULTS if summary_a.get(k) != summary_b.get(k)]
    if not differ or not same_requests(engine, a, b):
        return ""
    first = differ[0]
    unversioned = sorted({p["name"] for p in a.get("plugins") or [] if not p.get("version")} - _CORE_OBSERVERS)
    code = (f"; plugins without a version ({', '.join(unversioned)}) may also have changed between the runs"
            if unversioned else "")
    return (f"note: runs {a['id']} and {b['id']} have the same config, seed, trace, transforms and requests, and the "
            f"same plugins and versions, yet their results differ ({first} {summary_a.get(first)} against "
            f"{summary_b.get(first)}; {len(differ)} of {len(_RESULTS)} figures differ): a simulated replay is "
            "deterministic, so a plugin is not reproducible (it reads the wall clock, the global random module or "
            "state kept outside the run: use ctx.now_s and ctx.rng), or the code changed under the same version (an "
            f"editable install){code}. The comparison's differences are that noise, not an effect: "
            "controlplane.testing.assert_reproducible(plugin, trace=...) names the first request where two replays "
            "part")


def compare_document(side_a: list[int], side_b: list[int], runs_a: list[dict[str, Any]],
                     runs_b: list[dict[str, Any]], *, confidence: float, metrics: list[dict[str, Any]],
                     by_model: dict[str, list[dict[str, Any]]], workloads: str, differences: dict[str, Any],
                     deployments: str, notes: list[str], reproducibility: str = "") -> dict[str, Any]:
    """``runs compare --json``'s document: the metrics (with their verdicts), whether any covers fewer requests than
    each run completed (``metrics_restricted``), the side-by-side table's rows, each run's status and error, its
    SLO targets, the notes and what they flag (``reproducibility``: `reproducibility_note`'s)."""
    runs = (*runs_a, *runs_b)
    every = [*metrics, *(m for ms in by_model.values() for m in ms)]
    return {"a": side_a, "b": side_b, "confidence": confidence, "metrics": metrics,
            "metrics_restricted": any(m.get("covers") for m in every),
            # (one run a side: the intervals hold no seed-to-seed variation; null with --no-ci)
            "seed_variation_included": next((m["seed_variation_included"] for m in metrics
                                             if m.get("seed_variation_included") is not None), None),
            "interval_over": next((m["interval_over"] for m in metrics if m.get("interval_over")), None),
            "side_by_side": side_by_side_diffs(runs_a, runs_b),
            "cost": cost_diffs(runs_a, runs_b),  # (the table's GPU time and money, no interval)
            "runs": {str(r["id"]): {"status": r.get("status"), "error": (r.get("summary") or {}).get("error")}
                     for r in runs},
            "slo_targets": {str(r["id"]): slo_targets(r) for r in runs},  # (each run's attainment is against its own)
            "slo_targets_differ": targets_differ(runs),
            "workloads_differ": bool(workloads), "workloads_note": workloads or None,
            "deployments_differ": bool(differences), "deployment_differences": differences,
            "deployments_note": deployments or None, "not_reproducible": bool(reproducibility),
            "reproducibility_note": reproducibility or None, "notes": notes,
            **({"by_model": by_model} if by_model else {})}
