"""The TPOT of decodes beside a long prefill, for the SLO planner's replica capacity.

With chunked prefill (Sarathi) every iteration of a replica decodes its running requests and prefills
at most one chunk of ``chunk_tokens``; chunk ``j`` of a prompt attends over the ``j x chunk_tokens``
tokens prefilled before it, so the iterations that carry the late chunks of a 100k-token prompt are
several times longer than the mean iteration the capacity is sized at (Llama-3-8B on an A100, Vidur:
a 512-token chunk beside 4 decodes takes 45 ms at no context, 95 ms at 25k, 244 ms at 102k). A decode
in flight beside them is charged them in its TPOT (its iterations' mean). `LongPrefillTPOT` prices each
chunk with the run's latency model (`IterationEstimate` with its fourth argument, the chunk's context)
and counts, for a prompt of ``P`` tokens and ``n`` decodes in flight when its prefill starts, how many of
them miss the TPOT target (`victims`: over the recent outputs, each decode in flight with odds proportional
to its output, its residual life equally likely from 1 to it).
Only the decodes in flight are counted, an assumption: a router that balances by tokens (the bundled
config's `least-loaded`, `by: tokens`) sends new requests to the other replicas while a 100k-token prefill
is on one; with a router that does not, more decodes start beside it and the share is higher. Over
the prompts that arrived recently the share of requests that miss is `miss_share`; the planner keeps it
within a budget (`long_prefill_miss_budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["LongPrefillTPOT"]


class LongPrefillTPOT:
    """Chunk prices at one decode context (the mean shape's), cached per batch size, and the share of
    requests that miss the TPOT target beside the chunks.

    ``estimate(prefill_tokens, decode_seqs, decode_context_tokens, prefill_context_tokens)`` is the
    iteration estimate; ``decode_context`` the decodes' mean KV (as `replica_capacity` prices them);
    ``tpot_s`` the target a victim misses; `outputs` the decodes' outputs (iterations per decode), equally
    likely values (say quantiles of the recent ones; `set_outputs`)."""

    def __init__(self, estimate: Callable[..., float], *, chunk_tokens: int, decode_context: int,
                 tpot_s: float, outputs: Iterable[float] = (1.0,), step: int = 8) -> None:
        self.estimate = estimate
        self.chunk = max(1, int(chunk_tokens))
        self.context = int(decode_context)
        self.tpot_s = tpot_s
        self.step = max(1, int(step))
        self.outputs: tuple[int, ...] = ()
        self.set_outputs(outputs)
        self._costs: dict[int, np.ndarray] = {}  # batch -> iteration s carrying chunk j, for j so far
        self._priced: dict[tuple[int, int], float] = {}  # (batch, chunk) -> the latency model's answer
        self._victims: dict[tuple[int, int, int], float] = {}  # (chunks, batch, mean iteration in us) -> share

    def set_outputs(self, outputs: Iterable[float]) -> None:
        """The decodes' outputs, equally likely values (forgets the shares counted for others)."""
        outs = tuple(max(1, round(o)) for o in outputs) or (1,)
        if outs != self.outputs:
            self.outputs = outs
            self._victims = {}

    def chunk_costs(self, batch: int, chunks: int) -> np.ndarray:
        """The iterations (s) that carry chunk ``0 .. chunks - 1`` beside ``batch`` decodes. Every ``step``-th
        chunk is priced (and the last), the ones between interpolated linearly: a chunk's price is close to
        linear in its context (the attention over it), and a latency model's answer can take ~0.1 ms."""
        have = self._costs.get(batch)
        if have is None or len(have) < chunks:
            size = max(chunks, 2 * len(have) if have is not None else 0)
            at = np.unique(np.append(np.arange(0, size, self.step), size - 1))
            prices = [self._price(batch, int(j)) for j in at]
            have = np.interp(np.arange(size), at, prices)
            self._costs[batch] = have
        return have[:chunks]

    def _price(self, batch: int, j: int) -> float:
        key = (batch, j)
        c = self._priced.get(key)
        if c is None:
            c = self._priced[key] = float(self.estimate(self.chunk, batch, self.context, j * self.chunk))
        return c

    def victims(self, prompt_tokens: float, batch: int, mean_iteration_s: float) -> float:
        """The share of the decodes in flight when a ``prompt_tokens`` prefill starts beside them that miss the
        TPOT target. A decode of output ``D`` (one of `outputs`) is in flight with odds proportional to ``D``
        (its life), its residual life ``r`` equally likely from 1 to ``D``; its next ``min(r, chunks)``
        iterations carry the prefill's chunks, its others take ``mean_iteration_s``: it misses when the chunks
        add more than ``D x (target - mean_iteration_s)``. So the share is the misses summed over ``r`` and
        ``D`` over the sum of the ``D``."""
        chunks = max(1, math.ceil(prompt_tokens / self.chunk))
        key = (chunks, batch, round(mean_iteration_s * 1e6))
        v = self._victims.get(key)
        if v is not None:
            return v
        costs = self.chunk_costs(batch, chunks)
        slack = self.tpot_s - mean_iteration_s  # what the chunks may add over the mean, per iteration of its life
        if slack < 0:
            v = 1.0
        elif costs[-1] <= self.tpot_s:  # a chunk's price grows with its context: none over the target
            v = 0.0
        else:
            cum = np.cumsum(costs - mean_iteration_s)  # what the chunks add in the next 1 .. chunks iterations
            d = np.asarray(self.outputs, dtype=float)[:, None]
            over = cum[None, :] > slack * d  # [output, r - 1]: a residual life r <= chunks misses
            within = np.arange(1, chunks + 1)[None, :] <= d  # ... if the decode's life is that long
            missed = np.count_nonzero(over & within) + float(np.sum(np.maximum(0.0, d - chunks) * over[:, -1:]))
            v = float(missed) / float(d.sum())  # r > chunks: all the chunks, as at r = chunks
        if len(self._victims) > 100_000:
            self._victims.clear()
        self._victims[key] = v
        return v

    def miss_share(self, batch: int, mean_iteration_s: float, prompts: Iterable[tuple[float, int]]) -> float:
        """The share of requests that miss the TPOT target beside a long prefill at ``batch`` decodes in flight,
        for prompts arriving as ``prompts`` (``(tokens, how many)``, the longest first): each prefill of ``P``
        tokens makes ``batch x victims(P)`` of the decodes in flight beside it miss."""
        total = hit = 0.0
        counting = True
        for tokens, n in prompts:
            total += n
            if counting:
                v = self.victims(tokens, batch, mean_iteration_s)
                hit += n * v
                counting = v > 0  # a shorter prompt's chunks are fewer and cheaper: none either
        return batch * hit / total if total else 0.0
