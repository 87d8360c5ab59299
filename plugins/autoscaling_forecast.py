"""What the SLO planner needs besides its decision: an arrival-rate forecast with an upper bound, the
arrival curve of recent bursts (`BurstCurve`), and the request rate one replica sustains within TTFT
and TPOT targets (from an iteration estimate). Plain functions and small state classes; no hooks."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from controlplane.quantiles import short_quantile

__all__ = ["BurstCurve", "Capacity", "RateForecaster", "normal_abs_quantile", "replica_capacity"]


class RateForecaster:
    """Arrivals per second in buckets of ``bucket_s``, forecast by Holt's linear exponential
    smoothing (level ``alpha``, trend ``beta``), with an upper bound from the ``quantile`` of the
    last ``residual_buckets`` one-bucket-ahead forecast errors (scaled by sqrt of the steps ahead)."""

    def __init__(self, bucket_s: float, alpha: float, beta: float, quantile: float, residual_buckets: int,
                 band: str = "holt", first_band: str = "point", errors: str = "absolute") -> None:
        self.bucket_s = bucket_s
        self.errors = errors  # the band's errors: "absolute" |e|, or "signed": only under-forecasts widen it
        self.band = band
        self.first_band = first_band  # the error before 3 were seen: the point itself, or "poisson"
        self.alpha, self.beta, self.quantile = alpha, beta, quantile
        self.level: float | None = None
        self.trend = 0.0
        self.residuals: deque[float] = deque(maxlen=residual_buckets)
        self.history: deque[float] = deque(maxlen=residual_buckets)
        self._bucket_start: float | None = None
        self._count = 0.0
        self.num_buckets = 0
        # what `recent_max`, `excess_cv` and `relative_error` answered while ``num_buckets`` were closed
        # (they read only closed buckets: between two closes every tick asks the same)
        self._closed: dict = {}
        self._closed_at = 0
        self._band: tuple[tuple, float] = ((), 0.0)  # (the errors `_band_error` last read, its answer)

    def add(self, now_s: float, arrivals: float) -> None:
        """``arrivals`` requests seen in the tick ending at ``now_s``."""
        if self._bucket_start is None:
            self._bucket_start = now_s
        while now_s - self._bucket_start >= self.bucket_s - 1e-9:
            self._close(self._count / self.bucket_s)
            self._count = 0.0
            self._bucket_start += self.bucket_s
        self._count += arrivals

    def _close(self, rate: float) -> None:
        self.num_buckets += 1
        self.history.append(rate)
        if self.level is None:
            self.level = rate
            return
        predicted = self.level + self.trend
        self.residuals.append(rate - predicted)
        level = self.alpha * rate + (1 - self.alpha) * predicted
        self.trend = self.beta * (level - self.level) + (1 - self.beta) * self.trend
        self.level = level

    def _since_close(self, key: tuple, compute: Callable, *args):
        """``compute(*args)`` as answered since the last bucket closed (asked afresh once one has)."""
        closed = self._closed
        if self._closed_at != self.num_buckets:
            closed.clear()
            self._closed_at = self.num_buckets
        if key not in closed:
            closed[key] = compute(*args)
        return closed[key]

    def partial_rate(self, now_s: float, first_min_s: float | None = None) -> float:
        """The rate of the bucket still filling, over at least half a bucket (0 before any arrival);
        while no bucket has closed yet (the run's first ``bucket_s``), over at least ``first_min_s``
        when given: a load that starts at full rate is seen within seconds, not after half a bucket."""
        if self._bucket_start is None:
            return 0.0
        floor = self.bucket_s / 2
        if first_min_s is not None and self.num_buckets == 0:
            floor = min(floor, first_min_s)
        return self._count / max(now_s - self._bucket_start, floor)

    def partial_length(self, now_s: float) -> float:
        """The seconds `partial_rate` averages over (at least half a bucket)."""
        if self._bucket_start is None:
            return self.bucket_s / 2
        return max(now_s - self._bucket_start, self.bucket_s / 2)

    def recent_max(self, window_s: float) -> float:
        """The highest closed-bucket rate within the last ``window_s`` (0 without one)."""
        return self._since_close(("recent_max", window_s), self._recent_max, window_s)

    def _recent_max(self, window_s: float) -> float:
        n = min(len(self.history), math.ceil(window_s / self.bucket_s))
        return max(list(self.history)[-n:]) if n > 0 else 0.0

    def forecast(self, horizon_s: float) -> tuple[float, float]:
        """(point, upper): the highest rate the smoothed line reaches within ``horizon_s``, and it
        plus the error quantile for that many steps ahead. (0, 0) before the first bucket closes."""
        if self.level is None:
            return 0.0, 0.0
        steps = max(1, math.ceil(horizon_s / self.bucket_s))
        point = max(0.0, self.level + max(0.0, self.trend) * steps)
        if len(self.residuals) >= 3:
            err = self._band_error()
        elif self.first_band == "poisson":  # no errors yet: a Poisson count's at this quantile (normal approx.)
            err = normal_abs_quantile(self.quantile) * math.sqrt(point / self.bucket_s)
        else:
            err = point
        return point, point + err * self.spread(steps)

    def _band_error(self) -> float:
        """The ``quantile`` of the one-bucket errors (`forecast`), computed again only when they changed (a
        bucket closed): the last errors seen are compared as a tuple (zeros of either sign compare equal, and
        give the same error: the absolute one takes ``abs``, the signed one ``max(0, .)``)."""
        seen = (self.errors, self.quantile, tuple(self.residuals))
        if seen != self._band[0]:
            if self.errors == "signed":  # how far arrivals ran above the forecast: over-forecasts do not widen it
                err = max(0.0, short_quantile(self.residuals, self.quantile))
            else:
                err = short_quantile([abs(r) for r in self.residuals], self.quantile)
            self._band = (seen, err)
        return self._band[1]

    def spread(self, steps: int) -> float:
        """How much wider the error of a forecast ``steps`` buckets ahead is than a one-bucket one.
        Holt's method (additive errors): ``sqrt(1 + sum over j < steps of (alpha (1 + beta j))^2)``
        (Hyndman & Athanasopoulos, FPP3 table 5.2); ``sqrt(steps)`` (``band="sqrt"``) is a random walk's."""
        if self.band == "sqrt":
            return math.sqrt(steps)
        return math.sqrt(1.0 + sum((self.alpha * (1.0 + self.beta * j)) ** 2 for j in range(1, steps)))

    def excess_cv(self, buckets: int) -> float | None:
        """How much more the arrivals of the last ``buckets`` closed buckets vary than Poisson
        arrivals at their mean would: ``sqrt(max(0, var - mean)) / mean`` of the per-bucket counts
        (a Poisson stream's count variance is its mean, so its excess is 0 whatever its rate; the
        bundled Azure code trace's bursts are 0.7-1.8, Mooncake's conversation trace ~0-0.2). None
        with fewer buckets or no arrivals."""
        return self._since_close(("excess_cv", buckets), self._excess_cv, buckets)

    def _excess_cv(self, buckets: int) -> float | None:
        if buckets < 2 or len(self.history) < buckets:
            return None
        counts = np.asarray(list(self.history)[-buckets:]) * self.bucket_s
        mean = float(counts.mean())
        if mean <= 0:
            return None
        return math.sqrt(max(0.0, float(counts.var(ddof=1)) - mean)) / mean

    def relative_error(self) -> float | None:
        """Mean absolute one-step error over the mean rate (None with too few buckets)."""
        return self._since_close(("relative_error",), self._relative_error)

    def _relative_error(self) -> float | None:
        if len(self.residuals) < 3:
            return None
        mean = float(np.mean(self.history)) or 1.0
        return float(np.mean(np.abs(self.residuals))) / mean


def normal_abs_quantile(q: float) -> float:
    """``z`` with ``P(|Z| <= z) = q`` for a standard normal ``Z`` (bisection on erf; no scipy)."""
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid / math.sqrt(2)) < q else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class Capacity:
    """What one replica sustains within the targets, and the batch it does it at."""

    rate_per_s: float  # requests per second
    concurrency: int  # requests in the batch
    iteration_s: float  # the batch's iteration time (~ TPOT)
    ttft_s: float  # a new request's expected time to first token at that load, its wait in the queue aside
    limit: str  # what stopped a larger batch: "tpot", "ttft", "kv", "max_num_seqs", "prefill queue"
    wait_s: float = 0.0  # the mean wait in the replica's prefill queue before that (``price_moment_ratio``)
    miss_share: float = 0.0  # the share of requests missing TPOT beside long prefills at that load (``tpot_miss``)


def replica_capacity(
    estimate: Callable[[int, int, int], float], *, prompt_tokens: float, output_tokens: float, tpot_s: float,
    ttft_s: float, max_num_seqs: int, kv_tokens: int | None, chunk_tokens: int,
    prefill_tokens: float | None = None, price_moment_ratio: float | None = None,
    tpot_miss: Callable[[int, float], float] | None = None, tpot_miss_budget: float = 0.0,
) -> Capacity:
    """The largest steady request rate one replica serves with its mean iteration (TPOT) within
    ``tpot_s`` and a new request's prefill plus one iteration within ``ttft_s``.

    At ``n`` requests in flight, each iteration decodes ``n`` sequences and prefills the tokens that
    arrive meanwhile (``n x prompt / output`` per iteration on average); Little's law gives the rate,
    ``n / (ttft + output x iteration)``. The first ``n`` that breaks a target (or the KV or batch
    limit) stops the search; the last one that kept them is the capacity.

    ``prefill_tokens`` (default: the prompt) is the prompt whose prefill each request is charged, and
    a new request's TTFT is priced at: the cost-equivalent prompt of `RequestCosts` when the mean
    prompt's cost understates the mean cost. The KV budget and the decodes' context stay at the
    mean prompt (both are linear in it).

    ``price_moment_ratio`` (``E[S²] / E[S]²`` of the prefills' prices, `RequestCosts.price_moment_ratio`)
    adds the wait in the replica's **prefill queue**: prefills take their turn in the iterations' chunks,
    one server, so at ``n`` the replica is a Pollaczek-Khinchine M/G/1 queue of prefills arriving at
    ``rate`` (Little's law, as above), each taking ``S`` (the charged prompt's chunked prefill at that
    batch, its mean; its second moment ``ratio x S²``): utilisation ``rho = rate x S`` and mean wait
    ``rate x ratio x S² / (2 (1 - rho))``, which with the new request's TTFT must stay within ``ttft_s``. A heavy tail of prompt costs
    (a large ratio) makes the queue wait long well before the mean load fills the iterations; ``rho >= 1``
    stops the search ("prefill queue"). Where the wait is what stops it at ``n``, the rate is the one at which
    the wait just fits at batch ``n``'s iteration and prefill, ``2B / (S (ratio S + 2B))`` with ``B`` the
    TTFT room left (at least the rate at ``n - 1``): the load is continuous, the batch is not, and a step of
    one request in a batch of 3-6 is a 20-30% step in the rate. None: no queue (the rule before).

    ``tpot_miss(n, iteration_s)`` (`LongPrefillTPOT.miss_share`) is the share of requests that miss the TPOT
    target decoding beside a long prefill's chunks at ``n`` in flight; it must stay within ``tpot_miss_budget``
    ("long prefills" stops the search). Where it stops it at ``n``, the rate is interpolated between ``n - 1``'s
    and ``n``'s at the share that meets the budget (the share grows about linearly with the rate). None: no
    such term (the rule before).
    """
    prompt, output = max(1.0, prompt_tokens), max(1.0, output_tokens)
    work = prompt if prefill_tokens is None else max(1.0, prefill_tokens)
    context = int(prompt + output / 2)
    chunks = max(1, math.ceil(work / max(1, chunk_tokens)))
    chunk = min(int(work), chunk_tokens)
    # the last batch that kept the targets: (rate, concurrency, iteration_s, ttft_s, wait_s, miss_share) of its
    # Capacity, made once at the end (a frozen dataclass per batch size tried costs more than the arithmetic)
    best = (0.0, 0, 0.0, 0.0, 0.0, 0.0)
    n = 1
    while n <= max_num_seqs:
        prefill = int(n * work / output)
        t = estimate(prefill, n, context)
        prefill_s = chunks * estimate(chunk, n, context)
        ttft = t + prefill_s
        limit, wait = None, 0.0
        if price_moment_ratio is not None:  # the M/G/1 prefill queue at this batch's rate
            rate = n / (ttft + output * t)
            rho = rate * prefill_s
            if rho >= 1:
                limit = "prefill queue"
            else:
                wait = rate * price_moment_ratio * prefill_s ** 2 / (2 * (1 - rho))
        if limit is None and t > tpot_s:
            limit = "tpot"
        elif limit is None and ttft + wait > ttft_s:
            limit = "ttft"
        elif limit is None and kv_tokens is not None and n * (prompt + output) > kv_tokens:
            limit = "kv"
        miss = tpot_miss(n, t) if tpot_miss is not None and limit is None else 0.0
        if miss > tpot_miss_budget:
            limit = "long prefills"
        if limit is not None:
            rate, concurrency, best_t, best_ttft, best_wait, best_miss = best
            if limit == "long prefills":  # between n - 1 and n, where the share meets the budget
                here = n / (ttft + output * t)
                rate += (here - rate) * (tpot_miss_budget - best_miss) / (miss - best_miss)
                return Capacity(rate, concurrency, best_t, best_ttft, limit, best_wait,
                                tpot_miss_budget) if concurrency else Capacity(rate, 0, t, ttft, limit, wait,
                                                                               tpot_miss_budget)
            if limit == "ttft" and wait and ttft <= ttft_s:  # the queue binds between n - 1 and n in flight: the
                # rate at which its wait just fits, at batch n's iteration and prefill (continuous in the load)
                room = ttft_s - ttft
                rate = max(rate, 2 * room / (prefill_s * (price_moment_ratio * prefill_s + 2 * room)))
            return Capacity(rate, concurrency, best_t, best_ttft, limit, best_wait,
                            best_miss) if concurrency else Capacity(0.0, 0, t, ttft, limit, wait)
        best = (n / (ttft + output * t), n, t, ttft, wait, miss)
        n = n + 1 if n < 16 else n + max(1, n // 8)  # finer where it matters, coarse past 16
    rate, concurrency, best_t, best_ttft, best_wait, best_miss = best
    return Capacity(rate, concurrency, best_t, best_ttft, "max_num_seqs" if concurrency else "tpot", best_wait,
                    best_miss)


class BurstCurve:
    """The arrival curve of the last ``memory_s``: for each window length ``L`` in ``windows_s``,
    the most requests that arrived within any ``L`` seconds of it (counted in bins of ``bin_s``).
    `rate` gives the service rate that would have served every such burst within a queueing delay
    ``D``: a server of rate ``C`` that faces ``A(L)`` requests within ``L`` seconds has made the last
    of them wait at most ``A(L) / C - L``, so ``C = max over L of A(L) / (L + D)`` (network
    calculus' delay bound for a constant-rate server)."""

    def __init__(self, bin_s: float, memory_s: float, windows_s: tuple[float, ...]) -> None:
        self.bin_s = bin_s
        self.num_bins = max(1, math.ceil(memory_s / bin_s))
        self.windows = sorted({min(self.num_bins, max(1, round(w / bin_s))) for w in windows_s})
        self._bins: deque[list[float]] = deque()  # [bin index, requests] of bins with arrivals, oldest first
        self._sparse = True  # every weight so far >= 0: `rate` may read the bins with arrivals only (`_rate_sparse`)

    def add(self, time_s: float, weight: float = 1.0) -> None:
        i = math.floor(time_s / self.bin_s + 1e-9)
        if not weight >= 0:
            self._sparse = False
        if self._bins and self._bins[-1][0] >= i:
            self._bins[-1][1] += weight  # out of order by less than a bin: the newest bin
        else:
            self._bins.append([i, weight])

    def _prune(self, now_s: float) -> int:
        """Drop the bins older than the memory at ``now_s``; the index of the bin ``now_s`` falls in."""
        last = math.floor(now_s / self.bin_s + 1e-9)
        first = last - self.num_bins + 1
        bins = self._bins
        while bins and bins[0][0] < first:
            bins.popleft()
        return last

    def counts(self, now_s: float) -> list[float]:
        """The memory's arrivals per bin up to ``now_s``, oldest first, from its first bin with arrivals (a bin
        ahead of now counts in the last one); empty without arrivals in the memory."""
        last = self._prune(now_s)
        bins = self._bins
        if not bins:
            return []
        base = bins[0][0]
        top = max(last, base)
        dense = [0.0] * (top - base + 1)
        for i, w in bins:
            dense[min(i, top) - base] += w
        return dense

    def rate(self, now_s: float, delay_s: float) -> tuple[float, float, float]:
        """``(C, L, A(L))``: the rate that serves every burst of the memory within ``delay_s``, the
        window length that binds it and the requests that arrived in that window."""
        last = self._prune(now_s)
        bins = self._bins
        if not bins:
            return 0.0, 0.0, 0.0
        if self._sparse and bins[-1][0] <= last:
            return self._rate_sparse(last, delay_s)
        return self._rate_dense(last, delay_s)

    def _rate_dense(self, last: int, delay_s: float) -> tuple[float, float, float]:
        """`rate` over the memory's bins as a dense array (a bin ahead of ``last`` counts in the last one);
        the bins are pruned to the memory."""
        bins = self._bins
        dense = np.zeros(last - bins[0][0] + 1)
        base = last - len(dense) + 1
        for i, w in bins:
            dense[min(i, last) - base] += w
        cs = np.concatenate(([0.0], np.cumsum(dense)))
        best = (0.0, 0.0, 0.0)
        for n in self.windows:
            if n > len(dense):
                n = len(dense)
            work = float(np.max(cs[n:] - cs[:-n]))
            length = n * self.bin_s
            r = work / (length + delay_s)
            if r > best[0]:
                best = (r, length, work)
        return best

    def _rate_sparse(self, last: int, delay_s: float) -> tuple[float, float, float]:
        """`rate` from the bins with arrivals alone, the same floats as its dense arrays': ``cs``, the running
        sum of the bins from the oldest (``cs[j]``: before dense slot ``j``), is the one `numpy.cumsum` makes
        (an empty slot adds 0.0), constant between the bins with arrivals and never falling (no weight is
        negative). So for a window of ``n`` slots, ``cs[j + n] - cs[j]`` is largest at some ``j`` where a bin
        starts (or at the last ``j``, ``L - n``, where the windows stop): at any other ``j``, moving on to the
        next such point keeps ``cs[j]`` and does not lower ``cs[j + n]`` (rounded sums and differences keep
        order). Those ``j`` give the same differences as the dense array has there, so the same maximum."""
        bins = self._bins
        base = bins[0][0]
        size = last - base + 1  # the dense array's length
        pos = [i - base for i, _ in bins]
        sums = [0.0]
        for _, w in bins:
            sums.append(sums[-1] + w)
        count = len(pos)
        best = (0.0, 0.0, 0.0)
        for n in self.windows:
            n = min(n, size)
            stop = size - n
            e = 0
            work = -math.inf
            for k, p in enumerate(pos):  # cs[j] is sums[k]: the bins before j are the k before this one
                j = p if p < stop else stop  # (past the stop, the one before it lies below: none between)
                end = j + n
                while e < count and pos[e] < end:
                    e += 1
                v = sums[e] - sums[k]
                if v > work:
                    work = v
                if j == stop:
                    break
            length = n * self.bin_s
            r = work / (length + delay_s)
            if r > best[0]:
                best = (r, length, work)
        return best
