"""Decode runs and single prefills of Vidur's profile model priced from a few remembered numbers
(the simulator's fast mode; `sim.driver` uses them)."""

from __future__ import annotations

import math
import sys

from sim.latency.base import IterationShape, LatencyModel

__all__ = ["SteppedDecode", "steps_boundary", "steps_completed", "steps_total"]

#: Single-prefill prices `SteppedDecode.prefill_s` keeps before it starts over.
_MAX_PREFILLS = 65_536


class SteppedDecode:
    """Decode runs of a model whose decode iteration depends only on (batch size, mean KV
    length rounded up to ``granularity``): Vidur's profile model (``VidurProfileModel``).

    A run of k iterations is then a few constant steps, each priced once with the model's own
    ``iteration_s`` on a uniform shape of the same batch size and rounded mean, and cached.
    That is exactly what ``iteration_s`` (the exact mode) gives for every iteration, for the
    price of a dict lookup instead of ~8 numpy calls per batch (``decode_run_s`` on tiny
    arrays cost about as much as the rest of the batch's bookkeeping).

    The same model prices a batch of one prefill and no decodes (most prefill batches at low
    load per replica) from the prefill's tokens and context alone: `prefill_s` remembers
    ``iteration_s`` of each such pair (a replay asks for the trace's few thousand prompt
    lengths over and over), the same float as asking again.
    """

    __slots__ = ("model", "granularity", "_cache", "_prefills")

    def __init__(self, model: LatencyModel, granularity: int) -> None:
        self.model = model
        self.granularity = granularity
        self._cache: dict[int, float] = {}  # (batch size << 32 | rounded mean KV) -> seconds
        self._prefills: dict[tuple[int, int], float] = {}  # (tokens, context before) -> seconds

    @staticmethod
    def for_model(model: LatencyModel) -> SteppedDecode | None:
        vidur = sys.modules.get("sim.latency.vidur_profile")
        if vidur is not None and type(model) is vidur.VidurProfileModel:
            return SteppedDecode(model, int(model.granularity))
        return None

    def steps(self, batch_size: int, sum_context: int, num_iterations: int) -> list[tuple[int, float]]:
        """[(iterations, seconds each), ...] covering ``num_iterations`` decode iterations."""
        g = self.granularity
        b = batch_size
        mean = (sum_context + b) // b  # Vidur's mean KV length counts the token being decoded
        cache = self._cache
        out = []
        left = num_iterations
        while left > 0:
            kvq = -(-mean // g) * g
            n = kvq - mean + 1
            if n > left:
                n = left
            key = b << 32 | kvq
            d = cache.get(key)
            if d is None:
                d = cache[key] = self.model.iteration_s(IterationShape((), (), [kvq - 1] * b))
            out.append((n, d))
            left -= n
            mean += n
        return out

    def prefill_s(self, tokens: int, context: int) -> float:
        """``iteration_s`` of one iteration prefilling ``tokens`` of one request that holds
        ``context`` tokens already, with no decodes."""
        key = (tokens, context)
        d = self._prefills.get(key)
        if d is None:
            if len(self._prefills) >= _MAX_PREFILLS:
                self._prefills.clear()  # bounded: prompt lengths x prefix hits
            d = self._prefills[key] = self.model.iteration_s(IterationShape([tokens], [context], []))
        return d


def steps_total(steps: list[tuple[int, float]]) -> float:
    """The seconds of a decode run's steps ([(iterations, seconds each), ...])."""
    t = 0.0
    for n, d in steps:
        t += n * d
    return t


def steps_boundary(steps: list[tuple[int, float]], elapsed: float) -> tuple[int, float]:
    """(k, end): the first iteration boundary at or after ``elapsed`` (k >= 1 iterations)."""
    t = 0.0
    done = 0
    for n, d in steps:
        seg_end = t + n * d
        if elapsed <= seg_end or d <= 0.0:
            i = max(0, math.ceil((elapsed - t) / d)) if d > 0.0 else 0
            if i > n:
                i = n
            while i > 0 and t + (i - 1) * d >= elapsed:
                i -= 1
            while i < n and t + i * d < elapsed:
                i += 1
            if done + i == 0:
                i = 1
            return done + i, t + i * d
        t = seg_end
        done += n
    return done, t


def steps_completed(steps: list[tuple[int, float]], elapsed: float) -> tuple[int, float]:
    """(k, end): the iterations of the steps that ended by ``elapsed`` (k >= 0) and when the last of them ended
    (0.0 when none did), at the same boundaries as `steps_boundary`'s."""
    t = 0.0
    done = 0
    for n, d in steps:
        if d > 0.0:
            i = min(n, max(0, int((elapsed - t) / d)))
            while i > 0 and t + i * d > elapsed:
                i -= 1
            while i < n and t + (i + 1) * d <= elapsed:
                i += 1
            if i < n:
                return done + i, t + i * d
        t += n * d
        done += n
    return done, t
