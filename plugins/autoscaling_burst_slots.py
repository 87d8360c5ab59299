"""The burst rate of replicas whose requests hold a batch slot for a while (`slo-planner`'s `burst_model:
slots`).

`BurstCurve.rate` sizes a replica as a constant-rate server with no buffer: the rate ``C`` that serves
``A(L)`` arrivals of any ``L`` seconds within the queueing delay ``D``, ``max over L of A(L) / (L + D)``.
A replica of a continuous-batching engine is not one: each request holds one of its ``c`` batch slots for
``T`` seconds (its TTFT plus its decode; Little's law: ``T = c / C`` at the planned capacity), and a burst
shorter than ``T`` is absorbed by the slots the mean load leaves free. Over a window of ``L <= T`` the
slots hold the ``lambda T`` requests of the mean rate ``lambda`` plus the burst's excess ``A(L) - lambda
L``; they must fit the ``c`` slots and the ``C D`` more that free up within the delay, so

    C >= (lambda T + max over L <= T of (A(L) - lambda L)) / (T + D),

and over windows of ``L >= T`` the constant-rate bound ``A(L) / (L + D)`` holds as before. With short
holds (``T`` below the shortest window) this is the rule before; with long ones (outputs of hundreds
of tokens at a full batch, ``T`` of 10-30 s) a burst of a few seconds asks for what it adds to the
slots, not for its own rate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["slot_burst_rate"]


def slot_burst_rate(counts: Sequence[float], bin_s: float, memory_s: float, delay_s: float, hold_s: float,
                    windows_s: Sequence[float]) -> tuple[float, float, float]:
    """``(C, L, A(L))`` for ``counts`` (the memory's arrivals per bin of ``bin_s``, oldest first; the memory
    ``memory_s`` long): the rate above for a hold of ``hold_s`` (> 0), with the window that binds it and
    its arrivals; the constant-rate bound of each of ``windows_s`` at least ``hold_s`` long as well."""
    n = len(counts)
    if not n or hold_s <= 0:
        return 0.0, 0.0, 0.0
    a = np.asarray(counts, dtype=float)
    cs = np.concatenate(([0.0], np.cumsum(a)))
    best = (0.0, 0.0, 0.0)
    h = min(n, int(hold_s / bin_s + 1e-9))  # windows of whole bins within the hold (none: the rule before)
    if h:
        mean = float(cs[-1]) / max(memory_s, n * bin_s)  # the memory's mean rate (bins before its first arrival: empty)
        lengths = np.arange(1, h + 1)
        # the most arrivals within any L bins, for every L up to the hold: cs[j] - cs[j - L] over every j (a window
        # reaching back before the first bin counts the bins it holds)
        idx = np.arange(n + 1)
        most = (cs[None, :] - cs[np.clip(idx[None, :] - lengths[:, None], 0, None)]).max(axis=1)
        excess = most - mean * lengths * bin_s
        k = int(np.argmax(excess))
        best = ((mean * hold_s + max(0.0, float(excess[k]))) / (hold_s + delay_s), float(lengths[k] * bin_s),
                float(most[k]))
    for w in windows_s:
        if w < hold_s:
            continue
        m = max(1, min(n, round(w / bin_s)))
        work = float(np.max(cs[m:] - cs[:-m]))
        r = work / (m * bin_s + delay_s)
        if r > best[0]:
            best = (r, m * bin_s, work)
    return best
