"""What `controlplane runs compare` says for a script or a CI gate: the notes on runs that did not finish and on
intervals over fewer requests than each run completed (on stderr, as every note, and in ``--json``'s ``notes``),
and the ``--json`` document (docs/sweeps.md lists its keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.cli.compare_ci import cost_diffs, side_by_side_diffs
from controlplane.cli.runs_notes import slo_targets, targets_differ

__all__ = ["compare_document", "covers_note", "status_notes"]

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
    return (f"note: {len(marked)} of the {len(metrics)} metrics (those with `covers`, which says which requests) "
            f"are over the requests both runs completed (or replayed), not every request each run completed "
            f"({completed} completed), paired: their a, b and intervals are not the runs' own values (those are "
            "their a_whole and b_whole, and side_by_side); a run that completed fewer requests can read faster over "
            "those it did")


def compare_document(side_a: list[int], side_b: list[int], runs_a: list[dict[str, Any]],
                     runs_b: list[dict[str, Any]], *, confidence: float, metrics: list[dict[str, Any]],
                     by_model: dict[str, list[dict[str, Any]]], workloads: str, differences: dict[str, Any],
                     deployments: str, notes: list[str]) -> dict[str, Any]:
    """``runs compare --json``'s document: the metrics (with their verdicts), whether any covers fewer requests than
    each run completed (``metrics_restricted``), the side-by-side table's rows, each run's status and error, its
    SLO targets, the notes and what they flag."""
    runs = (*runs_a, *runs_b)
    every = [*metrics, *(m for ms in by_model.values() for m in ms)]
    return {"a": side_a, "b": side_b, "confidence": confidence, "metrics": metrics,
            "metrics_restricted": any(m.get("covers") for m in every),
            "side_by_side": side_by_side_diffs(runs_a, runs_b),
            "cost": cost_diffs(runs_a, runs_b),  # (the table's GPU time and money, no interval)
            "runs": {str(r["id"]): {"status": r.get("status"), "error": (r.get("summary") or {}).get("error")}
                     for r in runs},
            "slo_targets": {str(r["id"]): slo_targets(r) for r in runs},  # (each run's attainment is against its own)
            "slo_targets_differ": targets_differ(runs),
            "workloads_differ": bool(workloads), "workloads_note": workloads or None,
            "deployments_differ": bool(differences), "deployment_differences": differences,
            "deployments_note": deployments or None, "notes": notes,
            **({"by_model": by_model} if by_model else {})}
