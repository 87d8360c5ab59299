"""Percentiles of TTFT, TPOT and E2E, signed errors, the noise floor and per-request agreement."""

from __future__ import annotations

import math
import statistics

import numpy as np
from rich.table import Table

from fidelity_lib.replay import RequestTimes

METRICS = ("ttft", "tpot", "e2e")
PCTS = (50, 90, 99)
TARGET_PCT = 10.0  # |p50 error|
TARGET_P99_PCT = 20.0


def signed_pct(x: float, *, sign: bool = True) -> str:
    """A percentage for the report's text: ``+1.2%``, or ``n/a`` where there was nothing to compare (a load level
    with no slice, a live p50 of zero)."""
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.1f}%" if sign else f"{x:.1f}%"


def stats(times: list[RequestTimes]) -> dict[str, dict[int, float]]:
    """p50/p90/p99 of TTFT, TPOT and E2E (seconds) over completed requests."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for t in times:
        for m, v in t.latencies().items():
            if v is not None:
                values[m].append(v)
    return {m: {p: float(np.percentile(v, p)) if v else math.nan for p in PCTS} for m, v in values.items()}


def errors(live: dict, sim: dict) -> dict[str, dict[int, float]]:
    """Signed relative errors (sim - live) / live in %."""
    return {m: {p: 100.0 * (sim[m][p] - live[m][p]) / live[m][p] if live[m][p] else math.nan for p in PCTS}
            for m in METRICS}


def p50_standard_error(times: list[RequestTimes], metric: str, *, resamples: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the p50 of ``metric`` over these requests, in % of the p50.

    What the p50 of a slice this size moves by when its requests vary: with ~100 requests and a
    clumpy latency distribution (output lengths), a few percent of per-request error can move a
    request across a gap at the median. Reported only, to read the p50 errors against.
    """
    values = np.array([v for t in times if (v := t.latencies()[metric]) is not None])
    if len(values) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    p50 = np.percentile(rng.choice(values, (resamples, len(values))), 50, axis=1)
    return float(100.0 * p50.std() / np.percentile(values, 50))


def paired_abs_error(live: list[RequestTimes], sim: list[RequestTimes], metric: str) -> float:
    """Median over requests of |sim - live| / live for one metric (requests matched by trace id)."""
    by_id = {t.request_id: t.latencies()[metric] for t in sim}
    errs = []
    for t in live:
        lv, sv = t.latencies()[metric], by_id.get(t.request_id)
        if lv and sv is not None:
            errs.append(abs(sv - lv) / lv)
    return 100.0 * statistics.median(errs) if errs else math.nan


def comparison_table(title: str, live: dict, sim: dict, err: dict,
                     columns: tuple[str, str] = ("live (measured)", "sim (predicted)")) -> Table:
    t = Table(title=title, header_style="bold")
    for col in ("metric", *columns, "error"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for m in METRICS:
        for p in PCTS:
            e = err[m][p]
            style = "green" if abs(e) <= TARGET_PCT else ("yellow" if abs(e) <= 25 else "red")
            t.add_row(f"{m} p{p}", f"{live[m][p] * 1e3:.1f} ms", f"{sim[m][p] * 1e3:.1f} ms",
                      f"[{style}]{signed_pct(e)}[/]")
    return t



def pooled_errors(live: list[RequestTimes], sim: list[RequestTimes]) -> dict[str, dict[int, float]]:
    return errors(stats(live), stats(sim))


def e2e_correlation(live: list[RequestTimes], sim: list[RequestTimes], metric: str = "e2e") -> float:
    """Pearson correlation of one metric between simulated and live, the same requests matched by id."""
    by_id = {t.request_id: t.latencies()[metric] for t in sim}
    pairs = [(lv, by_id[t.request_id]) for t in live
             if (lv := t.latencies()[metric]) is not None and by_id.get(t.request_id) is not None]
    if len(pairs) < 3:
        return math.nan
    a = np.array(pairs)
    if a[:, 0].std() == 0 or a[:, 1].std() == 0:
        return math.nan
    return float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])


def live_spread(runs: list[list[RequestTimes]], metric: str, pct: int = 50) -> float:
    """The noise floor: (max - min) / mean of one percentile over repeated live runs of the same slice, in %."""
    values = [stats(r)[metric][pct] for r in runs]
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 2:
        return math.nan
    return 100.0 * (max(values) - min(values)) / statistics.fmean(values)


def busiest_busy_fraction(intervals: list[tuple[float, float]], window_s: float = 60.0) -> float:
    """The largest fraction of any ``window_s`` (or of the whole run, if shorter) that one worker spent in
    iterations; ``intervals`` are its iterations' (start, end), which do not overlap."""
    if not intervals:
        return 0.0
    iv = np.array(sorted(intervals), dtype=float)
    iv[:, 1] = np.maximum(iv[:, 1], iv[:, 0])
    iv[1:, 0] = np.maximum(iv[1:, 0], iv[:-1, 1])  # clip an overlap (a timestamp's jitter)
    iv[:, 1] = np.maximum(iv[:, 1], iv[:, 0])
    times = iv.reshape(-1)  # s0 e0 s1 e1 ...: the busy time so far is piecewise linear in t
    busy = np.concatenate([[0.0], np.repeat(np.cumsum(iv[:, 1] - iv[:, 0]), 2)[:-1]])
    span = min(window_s, max(times[-1] - times[0], 1e-9))
    starts = np.concatenate([iv[:, 0], iv[:, 1] - span])
    starts = starts[(starts >= times[0]) & (starts + span <= times[-1] + 1e-9)]
    if not len(starts):
        starts = np.array([times[0]])
    got = np.interp(starts + span, times, busy) - np.interp(starts, times, busy)
    return float(min(1.0, got.max() / span))
