"""What `runs compare`, `runs show` and `runs list` say about a run's workload beside its metrics: where it
stopped early (``--until``, a Ctrl-C), and the SLO targets its attainment is counted against; what `runs
export` and `runs plot` say of a run whose rows are not all stored (`incomplete_note`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["incomplete_note", "refused_line", "rows_refused", "same_requests", "slo_targets", "stopped_early",
           "stopped_line", "targets_differ", "targets_note", "transforms_unknown", "workload_note"]


def rows_refused(run: dict[str, Any]) -> str | None:
    """``48 rows refused``: a run whose rows the database refused (its summary's ``rows_refused``, by table:
    `controlplane.storage.refused`), stored without them; None for a run that lost none."""
    refused = (run.get("summary") or {}).get("rows_refused")
    if not isinstance(refused, dict) or not refused:
        return None
    return f"{sum(refused.values()):,} rows refused"


def refused_line(run: dict[str, Any]) -> str | None:
    """`runs show`'s line for a run whose rows the database refused (None for one that lost none)."""
    refused = (run.get("summary") or {}).get("rows_refused")
    if rows_refused(run) is None:
        return None
    tables = ", ".join(f"{n:,} {table}" for table, n in sorted(refused.items()))
    return (f"the database refused {tables} row(s) of this run: its stored rows lack them (the summary counts "
            "them; the refused rows are in the refused files its end named)")


def incomplete_note(run: dict[str, Any]) -> str | None:
    """A note (for stderr) that the rows of ``run`` are incomplete: it is still being written (``running``),
    or ``crashed`` (its process ended before the run did), or the database refused some of its rows
    (`rows_refused`); None for a run of any other status."""
    status = run.get("status")
    if status not in ("running", "crashed") and (refused := rows_refused(run)) is not None:
        return (f"note: run {run['id']} is missing rows, {refused} by the database (its summary counts them; "
                f"`controlplane runs show {run['id']}` says more)")
    if status == "running":
        why = "it is still running: these are the rows written so far"
    elif status == "crashed":
        spilled = (run.get("summary") or {}).get("spilled")
        why = ("its process ended while the database was away: its last rows are in a spill file" if spilled else
               "its process ended before the run did: these are the rows written until then")
    else:
        return None
    return (f"note: run {run['id']} is {status}, so its rows are incomplete ({why}; `controlplane runs show "
            f"{run['id']}` says more)")


def stopped_early(run: dict[str, Any]) -> str | None:
    """How the run stopped before its trace's end, as the workload's text: ``until=900 s`` (``--until``,
    ``sim.until_s``, when the run lasted until it: one whose trace ended first was not cut), ``interrupted at
    412.5 s`` (a Ctrl-C); None for a run that replayed its whole trace."""
    summary = run.get("summary") or {}
    if summary.get("interrupted_at_s") is not None:
        return f"interrupted at {summary['interrupted_at_s']:g} s"
    until = ((run.get("config") or {}).get("sim") or {}).get("until_s")
    end = summary.get("sim_end_s")
    if until is not None and (end is None or end >= until - 1e-9):
        return f"until={until:g} s"
    return None


def stopped_line(run: dict[str, Any]) -> str | None:
    """`runs show`'s line for a run stopped before its trace's end (None for one that was not)."""
    stopped = stopped_early(run)
    if stopped is None:
        return None
    summary = run.get("summary") or {}
    n = summary.get("num_in_flight")
    left = f"; {n:,} {'request' if n == 1 else 'requests'} in flight {'was' if n == 1 else 'were'} cut off" if n else ""
    if stopped.startswith("until="):
        return (f"stopped at --until: simulated second {stopped.removeprefix('until=').removesuffix(' s')} (requests "
                f"arriving later were not replayed{left})")
    by = "SIGTERM" if summary.get("interrupted_by") == "SIGTERM" else "Ctrl-C"  # (what the replay's own line said)
    return (f"stopped by {by} at simulated second {summary['interrupted_at_s']:g} (requests arriving later were not "
            f"replayed{left})")


def transforms_unknown(run: dict[str, Any]) -> bool:
    """Whether how the run read its trace (its transforms and format options) is not stored: a run of a trace whose
    config holds no ``trace_read`` and none of the ``process`` that every run's has since ``trace_read`` was
    stored (a run of revision 0002's releases, which recorded neither: it may have had ``--limit``, a window, ...).
    A run stored since then without ``trace_read`` read its trace as it is."""
    config = run.get("config")
    return bool(run.get("trace")) and isinstance(config, dict) and not {"trace_read", "process"} & config.keys()


def _workload(run: dict[str, Any]) -> str:
    read = (run.get("config") or {}).get("trace_read") or {}
    how = [f"{k}={v}" for k, v in sorted({**(read.get("transforms") or {}), **(read.get("options") or {})}.items())]
    if transforms_unknown(run):
        how.append("transforms unknown")
    if stopped := stopped_early(run):
        how.append(stopped)
    return f"{Path(run.get('trace') or '-').name}" + (f" ({', '.join(how)})" if how else "")


def workload_note(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]], engine: Any = None) -> str:
    """A note when the runs replayed different requests (another trace, window, speed-up, rate or limit, or a
    run stopped early by ``--until`` or Ctrl-C): their differences then mix the policies' effect with the
    workload's ('' when they are the same). Runs whose workloads read differently but whose stored requests
    are the same ones (with ``engine``: `same_requests`), as a replay of a live run's ``--save-trace`` file
    beside that live run, get no note. Where a run's transforms are not stored (`transforms_unknown`), only its
    requests can tell: without them being the same, the note says the runs may differ."""
    seen = {r["id"]: _workload(r) for r in runs}
    unknown = any(transforms_unknown(r) for r in runs)
    if len(set(seen.values())) <= 1 and not unknown:
        return _drawn_note(runs, seen, engine)
    if engine is not None:
        ones = list(runs) if unknown else list({seen[r["id"]]: r for r in runs}.values())  # (a run of each workload)
        if all(same_requests(engine, a, b) for a, b in _pairs_to_compare(ones)):
            return ""
    listed = "; ".join(f"run {rid}: {w}" for rid, w in seen.items())
    if len(set(seen.values())) <= 1:
        return (f"note: the runs may have replayed different requests ({listed}: how they read the trace is not "
                "stored): their differences may mix the policies' effect with the workload's")
    return (f"note: the runs replayed different requests ({listed}): their differences mix the policies' effect "
            "with the workload's")


def _drawn_note(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]], seen: dict[Any, str], engine: Any) -> str:
    """The note of runs that read one trace the same way yet replayed different requests (with ``engine``: the
    stored ids, lengths or arrivals differ): a transform or arrival process drawn by each run's seed (``rate_scale``
    thinning, a Vidur trace's Poisson arrivals) or a trace file changed under its name; '' when they are the same."""
    if engine is None or len(runs) < 2 or all(same_requests(engine, a, b) for a, b in _pairs_to_compare(runs)):
        return ""
    listed = "; ".join(f"run {rid}: {w}" for rid, w in seen.items())
    return (f"note: the runs read the trace the same way but replayed different requests ({listed}; other ids, "
            "lengths or arrivals: drawn by each run's seed, as rate_scale's thinning or a trace's Poisson arrivals "
            "are, or the file changed): with one run a side their differences mix the policies' effect with the "
            "workload's, and the intervals compare them independently, not paired; with several seeds a side the "
            "intervals over seeds hold that variation")


def _seed(run: dict[str, Any]) -> Any:
    """The seed a run's requests were drawn with: its row's, else its config's."""
    return run["seed"] if run.get("seed") is not None else (run.get("config") or {}).get("seed")


def _pairs_to_compare(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[tuple[dict[str, Any], ...]]:
    """The pairs of runs whose requests must be the same ones for the runs to have replayed one workload: the runs
    of each seed that more than one run has, each with the first of its seed (runs of seeds 0 and 1 a side, their
    requests drawn by each seed: seed 0's with seed 0's, never with seed 1's); where no seed has two runs (one run
    a side, of two seeds), every run with the first."""
    by_seed: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        by_seed.setdefault(_seed(run), []).append(run)
    pairs = [(same[0], other) for same in by_seed.values() if len(same) > 1 for other in same[1:]]
    return pairs or [(runs[0], other) for other in runs[1:]]


def _request_rows(engine: Any, run: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    """The run's requests as (request id, arrival, prompt tokens, tokens to generate), by id, with arrivals
    counted from its first; None when its rows are not all stored (fewer than its summary's requests)."""
    from sqlalchemy import select

    from controlplane.storage.models import Request

    c = Request.__table__.c
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(c.request_id, c.arrival_s, c.prompt_tokens, c.max_output_tokens)
                                               .where(c.run_id == run["id"]).order_by(c.request_id))]
    if not rows or len(rows) != (run.get("summary") or {}).get("num_requests"):
        return None
    start = min(r[1] for r in rows)
    return [(rid, arrival - start, prompt, out) for rid, arrival, prompt, out in rows]


def same_requests(engine: Any, a: dict[str, Any], b: dict[str, Any], *, tol_s: float = 1e-6) -> bool:
    """Whether runs ``a`` and ``b`` (`get_run` dicts) replayed the same requests: the same request ids, each
    with the same prompt and output lengths (where both runs stored them: `_agree`), arriving at the same times
    after their run's first arrival (to ``tol_s``: a live run's clock starts before its first request, a replay
    of its saved trace at that arrival). False when either run's rows are not all stored (``record: summary``, a
    crash)."""
    if (a.get("summary") or {}).get("num_requests") != (b.get("summary") or {}).get("num_requests"):
        return False
    rows_a, rows_b = _request_rows(engine, a), _request_rows(engine, b)
    if rows_a is None or rows_b is None:
        return False
    return all(ra[0] == rb[0] and all(_agree(x, y) for x, y in zip(ra[2:], rb[2:])) and abs(ra[1] - rb[1]) <= tol_s
               for ra, rb in zip(rows_a, rows_b))


def _agree(x: Any, y: Any) -> bool:
    """Two stored values of a request the same, or one of them unknown (NULL: ``max_output_tokens`` of a request
    stored before revision 0004, which added it)."""
    return x is None or y is None or x == y


def slo_targets(run: dict[str, Any]) -> dict[str, Any] | None:
    """The SLO targets the run's attainment counts against (its config's ``slo``; else its summary's)."""
    return (run.get("config") or {}).get("slo") or (run.get("summary") or {}).get("slo_targets")


def _comparable(slo: dict[str, Any] | None) -> str:
    return repr(sorted((k, v) for k, v in (slo or {}).items() if v is not None)) if slo else "-"


def targets_differ(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> bool:
    """Whether the runs' SLO targets differ (their attainments then count against different targets)."""
    return len({_comparable(slo_targets(r)) for r in runs}) > 1


def _targets(slo: dict[str, Any] | None) -> str:
    if not slo:
        return "(not stored)"
    return ", ".join(f"{k.removesuffix('_s').upper()} <= {v:g} s" for k, v in slo.items() if v is not None)


def targets_note(runs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    """A note when the runs' SLO targets differ ('' when they are the same)."""
    if not targets_differ(runs):
        return ""
    return ("SLO attainment: each run against its own SLO targets, which differ: "
            + "; ".join(f"run {r['id']} {_targets(slo_targets(r))}" for r in runs))
