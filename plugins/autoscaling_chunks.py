"""The TPOT of decodes beside a long prefill, for the SLO planner's replica capacity.

With chunked prefill (Sarathi) every iteration of a replica decodes its running requests and prefills
at most one chunk of ``chunk_tokens``; chunk ``j`` of a prompt attends over the ``j x chunk_tokens``
tokens prefilled before it, so the iterations that carry the late chunks of a 100k-token prompt are
several times longer than the mean iteration the capacity is sized at. A decode whose life overlaps
them is charged them in its TPOT (its iterations' mean). `LongPrefillTPOT` prices each chunk with the
run's latency model (`IterationEstimate` with its fourth argument, the chunk's context) and counts,
for a prompt of ``P`` tokens and a batch of ``n``, the start offsets (in iterations) at which a decode of
the mean output, sharing the replica with that prefill, would miss the TPOT target
(`victims`). Decodes start at ``n / output`` per iteration (Little's law), so each such prefill makes
``n / output x victims`` requests miss, and over the prompts that arrived recently the share of
requests that miss is `miss_share`. The planner keeps it within a budget (`long_prefill_miss_budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["LongPrefillTPOT"]


class LongPrefillTPOT:
    """Chunk prices and TPOT victims at one decode context (the mean shape's), cached per batch size.

    ``estimate(prefill_tokens, decode_seqs, decode_context_tokens, prefill_context_tokens)`` is the
    iteration estimate; ``decode_context`` the decodes' mean KV (as `replica_capacity` prices them);
    ``output`` the decodes' output (iterations per decode); ``tpot_s`` the target a victim misses."""

    def __init__(self, estimate: Callable[..., float], *, chunk_tokens: int, decode_context: int, output: float,
                 tpot_s: float) -> None:
        self.estimate = estimate
        self.chunk = max(1, int(chunk_tokens))
        self.context = int(decode_context)
        self.decodes = max(1, round(output))
        self.tpot_s = tpot_s
        self._costs: dict[int, np.ndarray] = {}  # batch -> iteration s carrying chunk j, for j so far
        self._victims: dict[tuple[int, int, int], float] = {}  # (chunks, batch, mean iteration in us) -> victims

    def chunk_costs(self, batch: int, chunks: int) -> np.ndarray:
        """The iterations (s) that carry chunk ``0 .. chunks - 1`` beside ``batch`` decodes."""
        have = self._costs.get(batch)
        if have is None or len(have) < chunks:
            start = 0 if have is None else len(have)
            more = [float(self.estimate(self.chunk, batch, self.context, j * self.chunk)) for j in range(start, chunks)]
            have = np.concatenate((have, more)) if have is not None else np.asarray(more, dtype=float)
            self._costs[batch] = have
        return have[:chunks]

    def victims(self, prompt_tokens: float, batch: int, mean_iteration_s: float) -> float:
        """Start offsets (iterations, from one decode's life before the prefill's first chunk to its last
        one) at which a decode of the mean output, its other iterations at ``mean_iteration_s``, misses the
        TPOT target for the chunks of a ``prompt_tokens`` prefill that fall within its life."""
        chunks = max(1, math.ceil(prompt_tokens / self.chunk))
        key = (chunks, batch, round(mean_iteration_s * 1e6))
        v = self._victims.get(key)
        if v is not None:
            return v
        costs = self.chunk_costs(batch, chunks)
        d = self.decodes
        room = (self.tpot_s - mean_iteration_s) * d  # what the chunks may add over the mean, in its life
        if costs[-1] <= self.tpot_s or room < 0:  # chunk costs grow with the context: none over the target
            v = 0.0 if room >= 0 else float(chunks + d - 1)
        else:
            cum = np.concatenate(([0.0], np.cumsum(costs - mean_iteration_s)))
            starts = np.arange(-(d - 1), chunks)  # the decode's life: iterations start .. start + d - 1
            lo, hi = np.clip(starts, 0, chunks), np.clip(starts + d, 0, chunks)
            v = float(np.count_nonzero(cum[hi] - cum[lo] > room))
        if len(self._victims) > 100_000:
            self._victims.clear()
        self._victims[key] = v
        return v

    def miss_share(self, batch: int, mean_iteration_s: float, prompts: Iterable[tuple[float, int]]) -> float:
        """The share of requests that miss the TPOT target beside a long prefill at ``batch`` decodes in flight,
        for prompts arriving as ``prompts`` (``(tokens, how many)``, the longest first): ``batch / output``
        decodes start per iteration, each prefill of ``P`` tokens makes ``victims(P)`` of their start offsets
        miss."""
        total = hit = 0.0
        counting = True
        for tokens, n in prompts:
            total += n
            if counting:
                v = self.victims(tokens, batch, mean_iteration_s)
                hit += n * v
                counting = v > 0  # a shorter prompt's chunks are fewer and cheaper: none either
        return batch / self.decodes * hit / total if total else 0.0
