"""`controlplane runs compare` with confidence intervals: which runs, and the table of differences."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from sqlalchemy import Engine, select

from controlplane.cli import common
from controlplane.cli.common import fmt_value
from controlplane.cli.tables import WHOLE, WORDS, fitted
from controlplane.compare import MIN_BEYOND

__all__ = ["COUNT_KEYS", "ROW_HIGHER_IS_BETTER", "by_model_diffs_json", "ci_table", "cost_diffs", "parse_metrics",
           "parse_run_ids",
           "row_diffs", "side_by_side", "side_by_side_diffs", "summary_diffs", "summary_means", "sweep_run_ids"]


def parse_run_ids(text: str, option: str) -> list[int]:
    """``"1,2,3"`` or ``"4-6"`` (ranges allowed) as run ids; ``ValueError`` naming the option."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not a run id or range (expected e.g. 1,2,3 or 4-6)") from None
    if not ids:
        raise ValueError(f"{option}: no run ids")
    return ids


def parse_metrics(text: str) -> list[tuple[str, str]]:
    """``--metrics``' ``"slo_attainment,ttft:p90,e2e:p99"`` as (metric, stat) pairs of
    ``controlplane.compare.METRICS`` (a metric alone: its mean), in that order; ``ValueError`` naming those."""
    from controlplane.compare import METRICS

    known = [m if s == "mean" and m == "slo_attainment" else f"{m}:{s}" for m, s in METRICS]
    found: list[tuple[str, str]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        metric, _, stat = part.partition(":")
        pair = (metric, stat or "mean")
        if pair not in METRICS:
            raise ValueError(f"--metrics: {part!r} is not a compared metric (one of {', '.join(known)})")
        found.append(pair)
    if not found:
        raise ValueError("--metrics: no metrics")
    return [m for m in METRICS if m in found]


def sweep_run_ids(engine: Engine, sweep_id: int, option: str) -> list[int]:
    """The finished runs of a sweep of one configuration (its point) over several seeds. A sweep of
    several points is refused, naming each point's runs (its runs are not seeds of one
    configuration); one not finished is said on stderr, with how many of its runs are compared."""
    from controlplane.storage.db import describe_url
    from controlplane.storage.models import Run, Sweep

    with engine.connect() as conn:
        sweep = conn.execute(select(Sweep.status, Sweep.num_runs, Sweep.kind, Sweep.spec, Sweep.result)
                             .where(Sweep.id == sweep_id)).first()
        runs = conn.execute(select(Run.id, Run.notes).where(Run.sweep_id == sweep_id, Run.status == "finished")
                            .order_by(Run.id)).all()
    if sweep is None and not runs:
        raise LookupError(f"{option}: sweep {sweep_id} not found in {describe_url(engine)}")
    if not runs:
        raise LookupError(f"{option}: sweep {sweep_id} has no finished runs")
    points: dict[str, list[int]] = {}
    for run_id, notes in runs:
        overrides = json.loads(notes or "{}").get("overrides", {})
        points.setdefault(json.dumps(overrides, sort_keys=True, default=str), []).append(run_id)
    in_spec = _spec_points(sweep) if sweep is not None else None
    if len(points) > 1 or (in_spec or 0) > 1:  # (an interrupted sweep's finished runs may be of one point of many)
        shown = "; ".join(f"{_point_text(json.loads(key))}: runs {','.join(map(str, ids))}"
                          for key, ids in list(points.items())[:_POINTS_SHOWN])
        more = f"; and {len(points) - _POINTS_SHOWN} more points" if len(points) > _POINTS_SHOWN else ""
        n = max(len(points), in_spec or 0)
        ran = "" if n == len(points) else f"; {len(points)} with finished runs" + (
            f", the sweep {sweep.status}" if sweep.status != "finished" else "")
        raise ValueError(f"{option}: sweep {sweep_id} holds {n} configurations (points{ran}), not one over "
                         f"seeds; compare one point's runs with {option.removesuffix('-sweep')} RUN,RUN: {shown}{more}")
    ids = [r[0] for r in runs]
    if sweep is not None and (sweep.status != "finished" or (sweep.num_runs and len(ids) < sweep.num_runs)):
        of = f" of {sweep.num_runs}" if sweep.num_runs else ""
        common.err.print(f"note: {option}: sweep {sweep_id} is {sweep.status}: comparing its {len(ids)}{of} "
                         "finished runs", highlight=False)
    return ids


_POINTS_SHOWN = 6


def _spec_points(sweep: Any) -> int | None:
    """How many points (configurations) the sweep's spec has, whatever ran of them: a sweep's runs
    (``num_runs``) over its seeds; a search's candidates. None when the row does not say."""
    spec = sweep.spec if isinstance(sweep.spec, dict) else {}
    if sweep.kind == "search":
        if isinstance(sweep.result, dict) and sweep.result.get("candidates"):
            return int(sweep.result["candidates"])
        from sim.sweep.spec import SweepSpec

        try:  # (a search stopped before its end stores no result: its spec's space)
            return len(SweepSpec.model_validate({k: v for k, v in spec.items() if k != "process"}).points())
        except Exception:  # noqa: BLE001 (a spec of an older version: the finished runs' points decide)
            return None
    seeds = spec.get("seeds") or []
    return sweep.num_runs // len(seeds) if sweep.num_runs and seeds else None


def _point_text(overrides: dict[str, Any]) -> str:
    from controlplane.cli.sweep import short_names

    names = short_names(sorted(overrides))
    return ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in sorted(overrides.items())) or "(base config)"


#: A summary's money: a run whose cost is not known (a GPU without a price) has None or no key, and the mean of
#: the others alone would read as the side's cost (two runs, one unpriced: the priced one's cost as "the mean").
MONEY_KEYS = ("cost_usd", "cost_per_1k_requests_usd", "guardian_cost_usd", "total_cost_usd")


def summary_means(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric value of the runs' summaries, its mean over the runs that have it (one run: its
    own values): a side's values without the requests' bootstrap (``--no-ci``). A money key
    (`MONEY_KEYS`) is None when any run lacks a number for it (its cost not known)."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for r in runs for k in (r.get("summary") or {}))
    for key in keys:
        values = [r["summary"][key] for r in runs if isinstance((r.get("summary") or {}).get(key), (int, float))
                  and not isinstance(r["summary"][key], bool)]
        if key in MONEY_KEYS and len(values) < len(runs):
            out[key] = None
        elif values:
            out[key] = values[0] if len(runs) == 1 else sum(values) / len(values)
    return out


def summary_diffs(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]],
                  metrics: Any = None) -> list[dict[str, Any]]:
    """The compared metrics (``controlplane.compare.METRICS``) from the runs' summaries, each side's
    mean over its runs, and B - A, with no interval: ``runs compare --no-ci --json``'s ``metrics``."""
    from controlplane.compare import METRICS, MetricDiff

    a, b = summary_means(runs_a), summary_means(runs_b)
    out = []
    for metric, stat in metrics or METRICS:
        key = metric if metric == "slo_attainment" else f"{metric}_{stat}_s"
        va, vb = a.get(key), b.get(key)
        diff = None if va is None or vb is None else vb - va
        out.append(MetricDiff(metric, stat, va, vb, diff, None, None, "summary mean over runs").as_dict())
    return out


#: The summary's counts of requests (`summary_table.HEADLINE`: requests, completed, rejected, ...), a table's first rows:
#: with several runs a side, the side-by-side table beside the intervals has them (their means), as it has one run's.
COUNT_KEYS = ("num_requests", "num_completed", "num_rejected", "num_failed", "num_in_flight", "num_cancelled",
              "num_blocked", "guardian_blocks_after_reply")

#: The summary's GPU time and money, as the side-by-side table's rows (`summary_table.TAIL`): ``runs compare
#: --json``'s ``cost``.
COST_KEYS = ("gpu_seconds", "gpu_busy_seconds", "peak_replicas", "gpu_hours", "cost_usd", "cost_per_1k_requests_usd",
             "guardian_gpu_seconds", "guardian_held_gpu_seconds", "guardian_gpu_hours", "guardian_cost_usd",
             "total_cost_usd")


#: Whether a higher value of a side-by-side row is better for B (``runs compare --json``'s ``higher_is_better``);
#: a row left out (requests, the span, peak replicas, scale events, times) is neither.
ROW_HIGHER_IS_BETTER: dict[str, bool] = {
    "num_completed": True, "throughput_rps": True, "output_tokens_per_s": True, "slo_attainment": True,
    "goodput_rps": True, "cache_hit_rate": True, "cache_gpu_seconds_saved": True, "prefix_token_hit_ratio": True,
    **dict.fromkeys(("num_rejected", "num_failed", "num_cancelled", "num_blocked", "gpu_seconds", "gpu_hours",
                     "cost_usd", "cost_per_1k_requests_usd", "guardian_cost_usd", "total_cost_usd",
                     "cache_false_hit_rate", "num_preemptions", "num_plugin_errors"), False),
    **{f"{m}_p{p}_s": False for m in ("ttft", "tpot", "e2e", "queue") for p in (50, 90, 99)},
}


def cost_diffs(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`row_diffs` of the `COST_KEYS`: ``runs compare --json``'s ``cost``."""
    return row_diffs(runs_a, runs_b, COST_KEYS)


def side_by_side_diffs(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`row_diffs` of every row of the side-by-side table (`summary_table.summary_rows`: the counts, latency
    percentiles, throughput, SLO attainment, goodput, GPU time, money, ...), each with ``higher_is_better``
    (`ROW_HIGHER_IS_BETTER`; None: neither): ``runs compare --json``'s ``side_by_side``, each side's own values
    whatever requests the intervals cover."""
    from controlplane.cli.summary_table import summary_rows

    rows = row_diffs(runs_a, runs_b, [key for key, _ in summary_rows()])
    return {key: {**row, "higher_is_better": ROW_HIGHER_IS_BETTER.get(key)} for key, row in rows.items()}


def row_diffs(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], keys: Any) -> dict[str, dict[str, Any]]:
    """Each of ``keys`` either side's summaries have: ``{"a", "b", "diff", "diff_pct"}``, the values the side-by-side
    table shows (`summary_means`: a side's mean over its runs, a cost None when any run's is not known), B - A and
    its percentage of A (None when either is None, ``diff_pct`` when A is 0)."""
    a, b = summary_means(runs_a), summary_means(runs_b)
    found = {}
    for key in keys:
        if key not in a and key not in b:
            continue
        va, vb = a.get(key), b.get(key)
        diff = None if va is None or vb is None else vb - va
        found[key] = {"a": va, "b": vb, "diff": diff, "diff_pct": 100 * diff / va if diff is not None and va else None}
    return found


def by_model_diffs_json(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``summary_diffs`` of each model both sides served (their summaries' ``by_model``), for
    ``runs compare --no-ci --json``; empty for runs of one model."""
    from controlplane.compare import BY_MODEL_METRICS

    def entries(runs: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
        return [{"summary": ((r.get("summary") or {}).get("by_model") or {}).get(model) or {}} for r in runs]

    models = [{m for r in side for m in ((r.get("summary") or {}).get("by_model") or {})} for side in (runs_a, runs_b)]
    return {m: summary_diffs(entries(runs_a, m), entries(runs_b, m), BY_MODEL_METRICS)
            for m in sorted(models[0] & models[1])}


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if metric == "slo_attainment" else f"{x:.4g}"


#: The intervals' table's columns as `controlplane.cli.tables.fitted` keeps them: a metric's name and the verdict
#: wrap between words; A, B and B - A are never cut; an interval wraps between its two ends, never inside one.
CI_KINDS = (WORDS, WHOLE, WHOLE, WHOLE, WORDS, WORDS)


def side_by_side(t: Table, width: int) -> Table:
    """A side-by-side table (`controlplane.cli.summary_table.compare_table`) fitted to ``width``: its labels wrap
    between words, its values and deltas are never cut (a row's fields a line each where they do not fit)."""
    return fitted(t, width, (WORDS, WHOLE, WHOLE, WHOLE, WHOLE))


def ci_table(diffs: list[Any], title: str, confidence: float, width: int | None = None) -> Table:
    """The intervals' table of ``diffs`` (`controlplane.compare.MetricDiff`); with ``width``, fitted to it
    (`CI_KINDS`: no number cut, a row's fields a line each where even a folded row does not fit)."""
    t = Table(title=title, header_style="bold")
    one_run = any(d.seed_variation_included is False for d in diffs)  # (one run a side: no seeds' variation)
    for col in ("metric", "A", "B", "B - A", f"{confidence:.0%} CI", "verdict (one run a side)" if one_run
                else "verdict"):
        t.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    covers = list(dict.fromkeys(d.covers for d in diffs if d.covers))
    for d in diffs:
        label = "SLO attainment" if d.metric == "slo_attainment" else f"{d.metric} {d.stat} (s)"
        if d.covers:
            label += " " + "*" * (covers.index(d.covers) + 1)
        verdict = ("- (too few values)" if d.no_verdict else "-") if d.verdict is None else (
            f"[{'dim' if d.within_noise else 'bold'}]{d.verdict}[/]")
        ci = "-" if d.low is None else f"[{_fmt(d.low, d.metric)}, {_fmt(d.high, d.metric)}]"
        diff = "-" if d.diff is None else ("+" if d.diff >= 0 else "") + _fmt(d.diff, d.metric)
        t.add_row(label, _fmt(d.a, d.metric), _fmt(d.b, d.metric), diff, ci, verdict)
    over = next((d.interval_over for d in diffs if d.interval_over), None)
    t.caption = (f"bootstrap over {over}" if over else
                 f"bootstrap over requests ({fmt_value(diffs[0].method) if diffs else '-'})") + \
        "; within noise: the interval contains 0 (to rounding)"
    if one_run:
        t.caption += ("\n! one run a side: the intervals hold the requests' variation, not the seeds' (a random "
                      "router's draws): two seeds of one config can read different; compare several seeds a side "
                      "(--a 1,2,3 --b 4,5,6) before trusting a verdict")
    if any(d.no_verdict for d in diffs):
        t.caption += (f"\n- (too few values): a percentile q needs {MIN_BEYOND}/(1-q) values a side for a verdict "
                      f"(p99: 1,000)")
    for i, c in enumerate(covers, start=1):  # rows whose A, B and interval are over fewer requests than each run's
        how = next(d.method for d in diffs if d.covers == c)  # (several runs a side: each run over them, not paired)
        t.caption += f"\n{'*' * i} A, B and the interval over {c}" + (" (paired)" if how == "paired" else "")
    return t if width is None else fitted(t, width, CI_KINDS)
