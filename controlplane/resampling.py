"""The bootstrap of one run against another (`controlplane.compare`), by resample counts.

A resample of N requests is a row of counts (how many times it drew each request, summing to N),
drawn once per resample and shared by every metric (and, for a paired comparison, by both runs:
the same requests drawn on both sides). Each statistic is then that of the drawn requests:

* a mean: the counts' weighted sum over the requests with a value, over their count (a product
  of the counts with a matrix of every metric's values, for all of a batch's resamples at once);
* a percentile (p50, p90, p99): the order statistics a resample's percentile falls between, as
  ``numpy.percentile`` (linear) takes them of the drawn values. They lie near the same ranks of
  the sorted values as the run's own percentile: the counts of the requests ranked below a window
  of ±8 standard deviations of that rank (one more column of the product) and the counts within
  it give them, without sorting the resample; the rare resample whose percentile is outside the
  window is computed over all its counts.

The requests are drawn in blocks (`block_counts`, `block_length`: a circular block bootstrap of
``2 n^(1/3)`` consecutive requests by arrival, 20 of 1,000): a burst's requests queue together, so
their latencies are correlated and requests drawn one by one understate the variance (two seeds of
one configuration read "different" on a quarter of their metrics). With blocks of 1
(`resample_counts`) it is the percentile bootstrap over requests as ``scipy.stats.bootstrap`` does it (a metric's
statistic over the drawn requests that have its value: a TPOT, a completion on both sides for a
paired comparison; so where some requests have none its resamples vary in size, as the requests
themselves are drawn), at about a request's worth of arithmetic per resample rather than a sort of
each resample per statistic: 1,000 resamples of two paired runs of 100,000 requests take ~1.5
CPU-seconds (they took ~30 with ``scipy.stats.bootstrap`` a metric at a time).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BATCH_VALUES", "PERCENTILES", "Side", "block_counts", "block_length", "bootstrap_diffs", "resample_counts"]

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
#: The most counts a batch of resamples holds (resamples x requests, 8 bytes each, twice).
BATCH_VALUES = 2_000_000
#: Half a percentile's window, in standard deviations of its rank among a resample's values.
_WINDOW_SDS = 8.0
#: `block_length`'s constant: blocks of ``BLOCK_SCALE * n ** (1/3)`` requests (20 of 1,000; 93 of 100,000).
BLOCK_SCALE = 2.0


def block_length(n: int) -> int:
    """The moving block bootstrap's block, in consecutive requests by arrival: ``BLOCK_SCALE * n ** (1/3)`` (the
    order of the block that estimates a correlated mean's variance best, Hall, Horowitz & Jing 1995), at least 1 and
    at most ``n``."""
    return max(1, min(n, round(BLOCK_SCALE * n ** (1 / 3))))


def block_counts(order: np.ndarray, block: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` circular block bootstrap resamples of ``len(order)`` items, as counts (as `resample_counts`): each
    resample is ``ceil(n / block)`` blocks of ``block`` consecutive items of ``order`` (item indices by arrival),
    each starting anywhere and wrapping around its end, the last block cut so that each row sums to ``n``."""
    n = len(order)
    block = max(1, min(block, n))
    blocks = -(-n // block)
    starts = rng.integers(n, size=(k, blocks))
    ends = starts + np.append(np.full(blocks - 1, block), n - block * (blocks - 1))
    offsets = (np.arange(k) * (2 * n + 1))[:, None]
    size = k * (2 * n + 1)
    steps = (np.bincount((starts + offsets).ravel(), minlength=size)
             - np.bincount((ends + offsets).ravel(), minlength=size)).reshape(k, 2 * n + 1)
    running = np.cumsum(steps[:, :2 * n], axis=1)
    by_arrival = running[:, :n] + running[:, n:]  # (a block past the end wraps to the start)
    counts = np.empty_like(by_arrival)
    counts[:, order] = by_arrival
    return counts


def resample_counts(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` resamples of ``n`` items with replacement, as counts: row r, column i, how many times
    resample r drew item i (each row sums to ``n``)."""
    idx = rng.integers(n, size=(k, n))
    idx += (np.arange(k) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=k * n).reshape(k, n)


class _Column:
    """One metric's values on one side, over the resampled requests (NaN: none), sorted once."""

    def __init__(self, values: np.ndarray, defined: np.ndarray, stats: Sequence[str], block: int = 1) -> None:
        self.defined = defined
        order = np.flatnonzero(defined)
        self.order = order[np.argsort(values[order], kind="stable")]
        self.sorted = values[self.order]
        self.sums = np.where(defined, values, 0.0)
        self.windows: dict[str, tuple[int, int, np.ndarray]] = {}
        n = len(self.order)
        for stat in stats:
            if stat not in PERCENTILES:
                continue
            p = PERCENTILES[stat] / 100
            # (blocks of correlated values move a resample's ranks more: by up to sqrt(block) as much)
            centre, half = p * (n - 1), int(_WINDOW_SDS * math.sqrt(n * p * (1 - p) * block)) + 64
            low, high = max(0, math.floor(centre) - half), min(n, math.ceil(centre) + half + 2)
            below = np.zeros(len(values), dtype=bool)
            below[self.order[:low]] = True
            self.windows[stat] = (low, high, below)


class Side:
    """One side's metrics over the requests its resamples draw: ``{metric: (values, defined)}`` and
    the statistics of each (``{metric: [stat, ...]}``). ``block`` > 1: its resamples are blocks of that many
    consecutive requests by arrival (``arrival_order``, the requests' indices in arrival order; None: as given),
    `block_counts`; 1: requests drawn one by one, `resample_counts`."""

    def __init__(self, columns: Mapping[str, tuple[np.ndarray, np.ndarray]], stats: Mapping[str, Sequence[str]],
                 block: int = 1, arrival_order: np.ndarray | None = None):
        self.n = len(next(iter(columns.values()))[0])
        self.block = max(1, min(block, self.n))
        self.arrival_order = np.arange(self.n) if arrival_order is None else arrival_order
        self.columns = {m: _Column(v, d, stats[m], self.block) for m, (v, d) in columns.items()}
        # Two products with each batch's counts: the sums in float64; the counts (of the requests with a value,
        # and of those ranked below each window) in float32, exact for whole numbers up to 2**24.
        exact = np.float32 if self.n < 2**24 else np.float64
        sums, tallies = [], []
        for m, c in self.columns.items():
            sums.append(((m, "sum"), c.sums))
            tallies.append(((m, "count"), c.defined))
            tallies += [((m, stat), below) for stat, (_, _, below) in c.windows.items()]
        self._sums = {name: i for i, (name, _) in enumerate(sums)}
        self._tallies = {name: i for i, (name, _) in enumerate(tallies)}
        self._sum_matrix = np.column_stack([x for _, x in sums])  # requests x metrics
        self._tally_matrix = np.column_stack([x.astype(exact) for _, x in tallies])
        self._tally_dtype = exact

    def draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` resamples of this side's requests, as counts (resamples x requests)."""
        if self.block == 1:
            return resample_counts(self.n, k, rng)
        return block_counts(self.arrival_order, self.block, k, rng)

    def defined_count(self, metric: str) -> int:
        return len(self.columns[metric].order)

    def statistics(self, counts: np.ndarray, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        """Each wanted (metric, stat) of the resamples whose counts are ``counts`` (resamples x requests)."""
        sums = counts.astype(np.float64) @ self._sum_matrix
        tallies = (counts.astype(self._tally_dtype) @ self._tally_matrix).round().astype(np.int64)
        out = {}
        for metric, stat in wanted:
            total = tallies[:, self._tallies[metric, "count"]]
            if stat == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[metric, stat] = sums[:, self._sums[metric, "sum"]] / total
            else:
                out[metric, stat] = self._percentile(counts, metric, stat, total, tallies[:, self._tallies[metric, stat]])
        return out

    def _percentile(self, counts: np.ndarray, metric: str, stat: str, total: np.ndarray,
                    below: np.ndarray) -> np.ndarray:
        col = self.columns[metric]
        low, high, _ = col.windows[stat]
        h = (total - 1) * (PERCENTILES[stat] / 100)
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, total - 1)
        cum = below[:, None] + np.cumsum(counts[:, col.order[low:high]], axis=1)
        j_lo = (cum <= lo[:, None]).sum(axis=1)  # the first rank whose running count passes the position
        j_hi = (cum <= hi[:, None]).sum(axis=1)
        inside = (below <= lo) & (j_hi < high - low) & (total > 0)
        width = max(high - low, 1)
        a = col.sorted[low + np.minimum(j_lo, width - 1)] if high > low else np.full(len(total), np.nan)
        b = col.sorted[low + np.minimum(j_hi, width - 1)] if high > low else np.full(len(total), np.nan)
        for r in np.flatnonzero(~inside):  # (outside the window: over all its counts)
            if total[r] <= 0:
                a[r] = b[r] = np.nan
                continue
            running = np.cumsum(counts[r, col.order])
            a[r] = col.sorted[np.searchsorted(running, lo[r], side="right")]
            b[r] = col.sorted[np.searchsorted(running, hi[r], side="right")]
        return _lerp(a, b, h - lo)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``numpy.percentile``'s linear interpolation between neighbouring order statistics, as it rounds."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def bootstrap_diffs(a: Side, b: Side | None, wanted: Sequence[tuple[str, str]], n_resamples: int,
                    rng: np.random.Generator, progress: Callable[[int], None] | None = None
                    ) -> dict[tuple[str, str], np.ndarray]:
    """Each wanted (metric, stat)'s B - A over ``n_resamples`` resamples. ``b`` None: paired, ``a``
    holding both sides' columns as ``("a", metric)`` and ``("b", metric)`` over the same requests (one
    row of counts for both); else each side is resampled on its own. ``progress(k)``: k more done."""
    try:  # (the products are small: OpenBLAS's threads would spin on every core for them)
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover (scikit-learn's dependency)
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1, user_api="blas")
    with limits:
        return _diffs(a, b, wanted, n_resamples, rng, progress)


def _diffs(a: Side, b: Side | None, wanted: Sequence[tuple[str, str]], n_resamples: int,
           rng: np.random.Generator, progress: Callable[[int], None] | None) -> dict[tuple[str, str], np.ndarray]:
    n = max(a.n, b.n if b is not None else 0, 1)
    batch = max(1, min(n_resamples, BATCH_VALUES // n))
    diffs: dict[tuple[str, str], list[np.ndarray]] = {w: [] for w in wanted}
    for start in range(0, n_resamples, batch):
        k = min(batch, n_resamples - start)
        if b is None:
            counts = a.draw(k, rng)
            both = a.statistics(counts, [(f"{side}:{m}", s) for side in "ab" for m, s in wanted])
            for m, s in wanted:
                diffs[m, s].append(both[f"b:{m}", s] - both[f"a:{m}", s])
        else:
            stats_a = a.statistics(a.draw(k, rng), wanted)
            stats_b = b.statistics(b.draw(k, rng), wanted)
            for w in wanted:
                diffs[w].append(stats_b[w] - stats_a[w])
        if progress is not None:
            progress(k)
    return {w: np.concatenate(d) for w, d in diffs.items()}
