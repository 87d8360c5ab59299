"""Differences between runs with bootstrap confidence intervals: is B really better than A?

Each side is one run or several (the same configuration over seeds). Every metric is a
statistic of per-request values: TTFT, TPOT, E2E and queue time (mean, p50, p90, p99 over the
requests that completed: ``numpy.percentile``'s linear interpolation) and SLO attainment (the share of all requests
that met both targets, each run against its own SLO targets, as its summary counts it).

* One run a side: a circular block bootstrap over requests in arrival order (`controlplane.resampling`: blocks of
  ``2 n^(1/3)`` consecutive requests, 20 of 1,000, since a burst's queueing latencies move together; each resample
  drawn once for every metric, TPOT over the drawn requests that have it). When both runs replayed the same
  requests (ids, prompts and arrivals: `same_requests`) the blocks are paired (the same drawn on both sides), which
  removes the trace's own variation from the difference. A paired comparison covers the requests that completed in
  both runs (``MetricDiff.covers`` says so when one completed requests the other did not); when one run replayed
  every request of the other and more (a live run's warm-up), it is paired over those both replayed. One run a side
  holds no seed-to-seed variation (a random router's draws): ``MetricDiff.interval_over`` says so.
* Several runs a side: a two-level bootstrap, runs (seeds) drawn with replacement, then
  requests within each drawn run, so seed-to-seed variation widens the interval as it should. The restrictions of
  one run a side apply to every run of both sides at once (`every_run_replayed`, `completed_in_every_run`), each
  metric over the requests with a value in every run, drawn apart in each run (not paired): a conservative interval.

A percentile over fewer than ``MIN_BEYOND / (1 - q)`` values a side has its interval but no verdict (`no_verdict`).
A difference whose interval contains 0 is reported as within noise, 0 to floating-point rounding:
an interval within ``ROUNDING`` of the values' magnitude (two runs that agree to 1e-12, e.g. the
fast and the exact replay modes, summing in different orders) is within noise, not "B higher".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from controlplane.storage.models import Request
from controlplane.storage.queries import get_run

__all__ = ["BY_MODEL_METRICS", "HIGHER_IS_BETTER", "METRICS", "ROUNDING", "MetricDiff", "RunSample", "compare_by_model",
           "compare_runs",
           "compare_samples", "compare_steps", "completed_in_every_run", "every_run_replayed", "load_sample",
           "resample_steps"]

LATENCIES = ("ttft", "tpot", "e2e", "queue")
STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda x: np.mean(x, axis=-1),
    "p50": lambda x: np.percentile(x, 50, axis=-1),
    "p90": lambda x: np.percentile(x, 90, axis=-1),
    "p99": lambda x: np.percentile(x, 99, axis=-1),
}
#: The percentiles' q, each as ``numpy.percentile`` takes it (linear interpolation between order statistics).
PERCENTILE_OF = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
#: Differences below this share of the values' magnitude are floating-point rounding, not a difference.
ROUNDING = 1e-9
#: (metric, statistic) pairs compared, in output order.
METRICS: tuple[tuple[str, str], ...] = (
    ("slo_attainment", "mean"),
    *((m, s) for m in ("ttft", "tpot", "e2e") for s in ("mean", "p50", "p90", "p99")),
    ("queue", "mean"), ("queue", "p99"),
)
#: Whether a higher value of a metric is better for B: SLO attainment's is; every latency's is worse.
HIGHER_IS_BETTER: dict[str, bool] = {"slo_attainment": True, **{m: False for m in LATENCIES}}
#: The metrics compared per model (`compare_by_model`): a shorter list, since each model gets its own table.
BY_MODEL_METRICS: tuple[tuple[str, str], ...] = (
    ("slo_attainment", "mean"), ("ttft", "p50"), ("ttft", "p99"), ("tpot", "p50"), ("tpot", "p99"),
    ("e2e", "p50"), ("e2e", "p99"),
)


@dataclass
class RunSample:
    """One run's per-request values: latencies (NaN where undefined) and whether each met the SLO."""

    run_id: int
    request_ids: np.ndarray
    values: dict[str, np.ndarray]  # ttft, tpot, e2e, queue: NaN for requests without one
    slo: dict[str, Any]
    prompt_tokens: np.ndarray | None = None  # with the ids, what makes two runs' requests the same ones
    models: np.ndarray | None = None  # each request's model
    arrivals: np.ndarray | None = None  # each request's arrival (s); None: the requests are in arrival order

    def arrival_order(self) -> np.ndarray:
        """The requests' indices in arrival order (ties by their order here)."""
        if self.arrivals is None:
            return np.arange(len(self.request_ids))
        return np.argsort(self.arrivals, kind="stable")

    def of_model(self, model: str) -> RunSample:
        """The requests of one model (``models`` must be known)."""
        return self.of_requests(self.models == model)

    def of_requests(self, keep: np.ndarray) -> RunSample:
        """The requests where ``keep`` (a boolean mask over ``request_ids``) is true, in the same order."""
        return RunSample(self.run_id, self.request_ids[keep], {k: v[keep] for k, v in self.values.items()}, self.slo,
                         None if self.prompt_tokens is None else self.prompt_tokens[keep],
                         None if self.models is None else self.models[keep],
                         None if self.arrivals is None else self.arrivals[keep])

    def attained(self, slo: dict[str, Any]) -> np.ndarray:
        v = self.values
        ttft, tpot, e2e = v["ttft"], v["tpot"], v["e2e"]
        ok = ~np.isnan(ttft) & (ttft <= slo["ttft_s"]) & (np.isnan(tpot) | (tpot <= slo["tpot_s"]))
        if slo.get("e2e_s") is not None:
            ok &= ~np.isnan(e2e) & (e2e <= slo["e2e_s"])
        return ok.astype(np.float64)


@dataclass
class MetricDiff:
    metric: str
    stat: str
    a: float | None
    b: float | None
    diff: float | None  # b - a
    low: float | None  # the confidence interval of the difference
    high: float | None
    method: str  # paired | independent | hierarchical
    #: The requests the values cover when not every completed request of each side (runs that completed, or
    #: replayed, different requests), e.g. "the 443 requests completed in both runs" ("in every run" with several
    #: runs a side).
    covers: str | None = None
    #: Where ``covers`` restricts ``a`` and ``b``: each side's value over every request it completed (its own, as
    #: its summary has it), which the restricted ``a``/``b`` are not; None where ``covers`` is.
    a_whole: float | None = None
    b_whole: float | None = None
    #: What the interval resamples (`interval_over`): with one run a side, requests of each run, not seeds.
    interval_over: str | None = None
    #: Why a metric with an interval has no verdict: a percentile over too few values (`too_few_for_percentile`).
    no_verdict: str | None = None

    @property
    def seed_variation_included(self) -> bool | None:
        """Whether the interval includes seed-to-seed variation: only with several runs a side (hierarchical);
        None without an interval."""
        if self.low is None or self.high is None:
            return None
        return self.method == "hierarchical"

    @property
    def within_noise(self) -> bool | None:
        """Whether the interval contains 0, to rounding: an interval of 1e-15 s beside values of 0.06 s
        is the order of floating-point sums, not a difference between the runs. None without an interval, or
        without a verdict (`no_verdict`)."""
        if self.low is None or self.high is None or self.no_verdict:
            return None
        tolerance = ROUNDING * max(abs(self.a or 0.0), abs(self.b or 0.0))
        return self.low <= tolerance and self.high >= -tolerance

    @property
    def verdict(self) -> str | None:
        """The intervals' table's word: ``within noise``, ``B higher`` or ``B lower``; None without an interval."""
        if self.within_noise is None:
            return None
        if self.within_noise:
            return "within noise"
        return "B higher" if (self.diff or 0.0) > 0 else "B lower"

    @property
    def outcome(self) -> str | None:
        """What the verdict is for B, by the metric's direction (`HIGHER_IS_BETTER`): ``better``, ``worse`` or
        ``within noise``; None without an interval."""
        if self.verdict in (None, "within noise"):
            return self.verdict
        return "better" if (self.verdict == "B higher") == HIGHER_IS_BETTER[self.metric] else "worse"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "stat": self.stat, "a": self.a, "b": self.b, "diff": self.diff,
                "low": self.low, "high": self.high, "method": self.method, "within_noise": self.within_noise,
                "verdict": self.verdict, "outcome": self.outcome, "higher_is_better": HIGHER_IS_BETTER[self.metric],
                "covers": self.covers, "a_whole": self.a_whole, "b_whole": self.b_whole,
                "interval_over": self.interval_over, "seed_variation_included": self.seed_variation_included,
                "no_verdict": self.no_verdict}


def load_sample(engine: Engine, run_id: int) -> RunSample:
    """A stored run's requests (in request id order) as a ``RunSample``; ``LookupError`` if none."""
    run = get_run(engine, run_id)
    t = Request.__table__
    cols = (t.c.request_id, t.c.status, t.c.ttft_s, t.c.tpot_s, t.c.e2e_s, t.c.queue_s, t.c.prompt_tokens, t.c.model,
            t.c.arrival_s)
    with engine.connect() as conn:
        rows = conn.execute(select(*cols).where(t.c.run_id == run_id).order_by(t.c.request_id)).all()
    if not rows:
        if (run.get("summary") or {}).get("num_requests") == 0:
            raise LookupError(f"run {run_id} has no requests to compare: it replayed none")
        raise LookupError(f"run {run_id} has no stored requests to compare (was it recorded with record: full?)")
    ids = np.array([r[0] for r in rows], dtype=object)
    completed = np.array([r[1] == "completed" for r in rows])
    values = {}
    for i, m in enumerate(LATENCIES, start=2):
        x = np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)
        x[~completed] = np.nan
        values[m] = x
    slo = ((run.get("config") or {}).get("slo")) or {"ttft_s": 2.0, "tpot_s": 0.2}
    return RunSample(run_id, ids, values, slo, np.array([r[6] for r in rows], dtype=np.int64),
                     np.array([r[7] or "" for r in rows], dtype=object), np.array([r[8] for r in rows], dtype=np.float64))


def _column(sample: RunSample, metric: str, slo: dict[str, Any]) -> np.ndarray:
    return sample.attained(slo) if metric == "slo_attainment" else sample.values[metric]


def _point(xs: Sequence[np.ndarray], stat: str) -> float | None:
    x = np.concatenate([v[~np.isnan(v)] for v in xs])
    return float(STATS[stat](x)) if x.size else None


def _single_diffs(a: RunSample, b: RunSample, metrics: Sequence[tuple[str, str]], paired: bool, confidence: float,
                  n: int, rng: np.random.Generator, progress: Callable[[int], None] | None, block: int | None
                  ) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """Each metric's interval of one run against another (`controlplane.resampling`): blocks of consecutive requests
    by arrival (``block`` of them, None: `block_length`'s; 1: requests one by one) drawn with replacement, the same
    blocks on both sides when ``paired``; ``(None, None)`` with under 2 values a side."""
    from controlplane.resampling import Side, block_length, bootstrap_diffs

    def blocks(sample: RunSample) -> dict[str, Any]:
        return {"block": block_length(len(sample.request_ids)) if block is None else block,
                "arrival_order": sample.arrival_order()}

    stats: dict[str, list[str]] = {}
    for metric, stat in metrics:
        stats.setdefault(metric, []).append(stat)
    if paired:
        columns = {}
        for metric in stats:
            xa, xb = _column(a, metric, a.slo), _column(b, metric, b.slo)
            both = ~np.isnan(xa) & ~np.isnan(xb)
            columns[f"a:{metric}"], columns[f"b:{metric}"] = (xa, both), (xb, both)
        side_a = Side(columns, {f"{s}:{m}": v for m, v in stats.items() for s in "ab"}, **blocks(a))
        side_b = None
        enough = {m for m in stats if side_a.defined_count(f"a:{m}") >= 2}
    else:
        sides = []
        for sample in (a, b):
            cols = {m: _column(sample, m, sample.slo) for m in stats}
            sides.append(Side({m: (x, ~np.isnan(x)) for m, x in cols.items()}, stats, **blocks(sample)))
        side_a, side_b = sides
        enough = {m for m in stats if min(side_a.defined_count(m), side_b.defined_count(m)) >= 2}
    wanted = [(m, s) for m, s in metrics if m in enough]
    d = bootstrap_diffs(side_a, side_b, wanted, n, rng, progress) if wanted else {}
    alpha = (1 - confidence) / 2
    out: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for w in metrics:
        x = d[w][~np.isnan(d[w])] if w in d else np.empty(0)
        out[w] = (float(np.percentile(x, 100 * alpha)), float(np.percentile(x, 100 * (1 - alpha)))) if x.size else (
            None, None)
    return out


def completed_in_both(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The paired values of the requests with a value on both sides, and what they cover when it is
    not every value of each side (None when it is)."""
    keep = ~np.isnan(a) & ~np.isnan(b)
    n = int(keep.sum())
    if n == int((~np.isnan(a)).sum()) == int((~np.isnan(b)).sum()):
        return a[keep], b[keep], None
    return a[keep], b[keep], f"the {n} requests completed in both runs"


def _hierarchical(a: Sequence[np.ndarray], b: Sequence[np.ndarray], stat: str, confidence: float, n: int,
                  rng: np.random.Generator, batch: int = 50,
                  progress: Callable[[int], None] | None = None) -> tuple[float | None, float | None]:
    """Runs drawn with replacement, then requests within each; the statistic over the pooled draw."""
    f = STATS[stat]
    a = [x[~np.isnan(x)] for x in a]
    b = [x[~np.isnan(x)] for x in b]
    if any(x.size == 0 for x in (*a, *b)):
        return None, None

    def draws(group: list[np.ndarray], k: int) -> np.ndarray:
        out = []
        for _ in range(k):
            runs = rng.integers(len(group), size=len(group))
            out.append(np.concatenate([group[r][rng.integers(group[r].size, size=group[r].size)] for r in runs]))
        size = min(len(x) for x in out)  # pooled draws differ in length when runs do: trim to a common one
        return np.stack([x[:size] if len(x) == size else rng.choice(x, size, replace=False) for x in out])

    diffs = []
    for start in range(0, n, batch):
        k = min(batch, n - start)
        diffs.append(f(draws(b, k)) - f(draws(a, k)))
        if progress is not None:
            progress(k)
    d = np.concatenate(diffs)
    alpha = (1 - confidence) / 2
    return float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))


#: How far (s) two runs' arrivals of a request, each after its run's first arrival, may be apart for the request to be
#: the same one (as `controlplane.cli.runs_notes.same_requests` has it).
ARRIVAL_TOLERANCE_S = 1e-6


def same_requests(a: RunSample, b: RunSample) -> bool:
    """Whether two runs served the same requests: the same ids with the same prompts (two traces that number
    their requests 0, 1, ... share ids and nothing else), arriving at the same times after each run's first arrival
    (to `ARRIVAL_TOLERANCE_S`: arrivals drawn by each run's seed, a trace's Poisson arrivals, are other requests)."""
    if a.request_ids.shape != b.request_ids.shape or not bool(np.all(a.request_ids == b.request_ids)):
        return False
    if a.prompt_tokens is not None and b.prompt_tokens is not None and not bool(np.all(a.prompt_tokens ==
                                                                                       b.prompt_tokens)):
        return False
    if a.arrivals is None or b.arrivals is None or not len(a.arrivals):
        return True
    offsets_a, offsets_b = a.arrivals - a.arrivals.min(), b.arrivals - b.arrivals.min()
    return bool(np.all(np.abs(offsets_a - offsets_b) <= ARRIVAL_TOLERANCE_S))


def within_other(a: RunSample, b: RunSample) -> tuple[RunSample, RunSample, str] | None:
    """When one run replayed every request of the other and more (a live run that served a warm-up before its
    trace, a run with a longer ``--limit``): both runs restricted to the requests they share, and what that covers;
    None otherwise (or when the runs are the same requests, or share none)."""
    small, big = (a, b) if len(a.request_ids) <= len(b.request_ids) else (b, a)
    if not len(small.request_ids) or len(small.request_ids) == len(big.request_ids):
        return None
    keep = np.isin(big.request_ids, small.request_ids)
    inner = big.of_requests(keep)
    if not same_requests(small, inner):
        return None
    extra = left_out_ids(big, keep)
    covers = (f"the {len(small.request_ids)} requests both runs replayed (run {big.run_id}'s {len(extra)} others "
              f"left out: {_first_ids(extra)})")
    return (small, inner, covers) if small is a else (inner, small, covers)


def left_out_ids(sample: RunSample, keep: np.ndarray) -> list[str]:
    """The ids of ``sample``'s requests ``keep`` (a mask over them) leaves out, in arrival order, those arriving
    together by their ids, numerically where all are numbers (sorted as text, as stored, 800-1199 read ``1000, 1001,
    1002, ...``)."""
    out = sample.of_requests(~keep)
    ids = [str(i) for i in out.request_ids]
    numeric = all(i.isdigit() for i in ids)
    at = out.arrivals if out.arrivals is not None else range(len(ids))  # (None: in arrival order already)
    return [ids[j] for j in sorted(range(len(ids)), key=lambda j: (at[j], int(ids[j]) if numeric else ids[j]))]


def _first_ids(ids: list[str]) -> str:
    """The first three of ``ids``, then ``...`` if there are more."""
    return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")


def every_run_replayed(a: Sequence[RunSample], b: Sequence[RunSample]
                       ) -> tuple[list[RunSample], list[RunSample], str] | None:
    """`within_other` of several runs a side: when the runs did not all replay the same requests but every run
    replayed every request of the one that replayed fewest (runs of a longer ``--limit``), every run restricted to
    those, and what that covers; None otherwise (the same requests everywhere, or requests not nested: the runs are
    then compared whole). One run a side: `within_other`'s."""
    if len(a) == 1 and len(b) == 1:
        shared = within_other(a[0], b[0])
        return None if shared is None else ([shared[0]], [shared[1]], shared[2])
    runs = [*a, *b]
    small = min(runs, key=lambda s: len(s.request_ids))
    if not len(small.request_ids) or all(same_requests(small, s) for s in runs):
        return None
    restricted, left_out = [], []
    for s in runs:
        keep = np.isin(s.request_ids, small.request_ids)
        inner = s.of_requests(keep) if not keep.all() else s
        if not same_requests(small, inner):
            return None
        restricted.append(inner)
        if not keep.all():
            left_out.append((s.run_id, left_out_ids(s, keep)))
    others = ", ".join(f"run {rid}'s {len(extra)}" for rid, extra in left_out)
    covers = (f"the {len(small.request_ids)} requests every run replayed ({others} others left out: "
              f"{_first_ids(left_out[0][1])})")
    return restricted[:len(a)], restricted[len(a):], covers


def completed_in_every_run(xs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
    """`completed_in_both` of several runs a side (runs of the same requests, in the same order): each run's values
    of the requests with a value in every run, and what they cover when it is not every value of each run (None when
    it is)."""
    keep = np.logical_and.reduce([~np.isnan(x) for x in xs])
    n = int(keep.sum())
    if all(n == int((~np.isnan(x)).sum()) for x in xs):
        return [x[keep] for x in xs], None
    return [x[keep] for x in xs], f"the {n} requests completed in every run"


#: The values a percentile q needs behind it for a verdict: ``MIN_BEYOND / (1 - q)``, i.e. ``MIN_BEYOND`` values beyond
#: it (p50: 20, p90: 100, p99: 1,000). A p99 of 40 requests is their largest: its interval says nothing dependable.
MIN_BEYOND = 10


def too_few_for_percentile(stat: str, counts: Sequence[int]) -> str | None:
    """Why a percentile over ``counts`` values (each side's) gets no verdict (`MIN_BEYOND`), or None when it does."""
    if stat not in PERCENTILE_OF:
        return None
    q, fewest = PERCENTILE_OF[stat], min(counts)
    needed = int(np.ceil(MIN_BEYOND / (1 - q) - 1e-9))
    if fewest >= needed:
        return None
    return (f"{stat} over {fewest:,} values: a percentile q needs {MIN_BEYOND}/(1-q) = {needed:,} values behind it "
            f"for a verdict ({MIN_BEYOND} beyond it)")


def interval_over(a: Sequence[RunSample], b: Sequence[RunSample], paired: bool, block: int | None) -> str:
    """What the intervals resample, as `MetricDiff.interval_over` says it."""
    if len(a) > 1 or len(b) > 1:
        return "runs (seeds) of each side, then requests within each: seed-to-seed variation included"
    from controlplane.resampling import block_length

    sizes = sorted({block_length(len(s.request_ids)) if block is None else block for s in (a[0], b[0])})
    how = ("requests drawn one by one" if sizes == [1] else
           f"blocks of {' and '.join(map(str, sizes))} consecutive requests by arrival")
    return f"{how} of one run a side{', paired' if paired else ''}; seed-to-seed variation not included"


def compare_samples(a: Sequence[RunSample], b: Sequence[RunSample], *, confidence: float = 0.95,
                    n_resamples: int = 1000, seed: int = 0,
                    metrics: Sequence[tuple[str, str]] = METRICS,
                    progress: Callable[[int], None] | None = None, block: int | None = None) -> list[MetricDiff]:
    """Each metric's value on both sides, B - A, and its bootstrap confidence interval. ``progress(k)``:
    k more resamples done (of ``n_resamples`` a metric for several runs a side; all metrics' at once for one)."""
    if not a or not b:
        raise ValueError("compare needs at least one run on each side")
    rng = np.random.default_rng(seed)
    single = len(a) == 1 and len(b) == 1
    whole_a, whole_b = a, b  # (values restricted to fewer requests: each side's own values too)
    paired = single and same_requests(a[0], b[0])
    shared = None if paired else every_run_replayed(a, b)
    if shared is not None:  # over the requests every run replayed (one run a side: paired)
        a, b, shared = shared
        paired = single
    # Several runs a side, of the same requests: each metric over those with a value in every run.
    aligned = not single and all(same_requests(a[0], s) for s in (*a, *b))
    over = interval_over(a, b, paired, block)
    intervals = (_single_diffs(a[0], b[0], metrics, paired, confidence, n_resamples, rng, progress, block) if single
                 else {})
    out = []
    for metric, stat in metrics:
        xa = [_column(s, metric, s.slo) for s in a]  # (each run's attainment against its own targets)
        xb = [_column(s, metric, s.slo) for s in b]
        covers = None
        if paired:  # the values, the difference and its interval over the same requests
            pa, pb, covers = completed_in_both(xa[0], xb[0])
            if shared is not None:
                covers = shared if covers is None else f"{covers}, of {shared}"
            va, vb = _point([pa], stat), _point([pb], stat)
        else:
            if aligned:
                kept, covers = completed_in_every_run([*xa, *xb])
                xa, xb = kept[:len(xa)], kept[len(xa):]
            if shared is not None and not single:
                covers = shared if covers is None else f"{covers}, of {shared}"
            va, vb = _point(xa, stat), _point(xb, stat)
        if single:
            (low, high), method = intervals[metric, stat], "paired" if paired else "independent"
        else:
            (low, high), method = _hierarchical(xa, xb, stat, confidence, n_resamples, rng,
                                                progress=progress), "hierarchical"
        diff = None if va is None or vb is None else vb - va
        whole = ([_point([_column(s, metric, s.slo) for s in side], stat) for side in (whole_a, whole_b)] if covers
                 else [None, None])
        behind = [sum(int((~np.isnan(x)).sum()) for x in side) for side in (([pa], [pb]) if paired else (xa, xb))]
        out.append(MetricDiff(metric, stat, va, vb, diff, low, high, method, covers, *whole, interval_over=over,
                              no_verdict=too_few_for_percentile(stat, behind)))
    return out


def resample_steps(a: Sequence[RunSample], b: Sequence[RunSample], n_resamples: int,
                   metrics: Sequence[tuple[str, str]] = METRICS) -> int:
    """How many steps ``compare_samples(a, b, ...)`` reports to its ``progress`` in all: its resamples,
    once for one run a side (all metrics from each), once a metric for several."""
    return n_resamples if len(a) == 1 and len(b) == 1 else n_resamples * len(metrics)


def compare_runs(engine: Engine, runs_a: Sequence[int], runs_b: Sequence[int], **kwargs: Any) -> list[MetricDiff]:
    """``compare_samples`` of stored runs (one or several run ids a side)."""
    return compare_samples([load_sample(engine, r) for r in runs_a], [load_sample(engine, r) for r in runs_b],
                           **kwargs)


def compare_steps(a: Sequence[RunSample], b: Sequence[RunSample], n_resamples: int,
                  metrics: Sequence[tuple[str, str]] = METRICS) -> int:
    """The steps ``compare_samples`` (of ``metrics``) and then ``compare_by_model`` of these runs report to
    ``progress``, in all."""
    return resample_steps(a, b, n_resamples, metrics) + len(_models_compared(a, b)) * resample_steps(
        a, b, n_resamples, BY_MODEL_METRICS)


def _models_compared(a: Sequence[RunSample], b: Sequence[RunSample]) -> list[str]:
    """The models ``compare_by_model`` compares: those both sides served, when they served two or more."""
    def served(side: Sequence[RunSample]) -> set[str]:
        return {str(m) for s in side if s.models is not None for m in np.unique(s.models)}

    seen_a, seen_b = served(a), served(b)
    return [] if len(seen_a | seen_b) < 2 else sorted(seen_a & seen_b)


def compare_by_model(a: Sequence[RunSample], b: Sequence[RunSample], *,
                     metrics: Sequence[tuple[str, str]] = BY_MODEL_METRICS, **kwargs: Any) -> dict[str, list[MetricDiff]]:
    """``compare_samples`` of each model's requests, for the models both sides served; empty when the runs
    served one model between them (the whole comparison is that model's). An aggregate can hide opposite
    moves: one model's attainment falling while a busier one's rises."""
    return {m: compare_samples([s.of_model(m) for s in a], [s.of_model(m) for s in b], metrics=metrics, **kwargs)
            for m in _models_compared(a, b)}
