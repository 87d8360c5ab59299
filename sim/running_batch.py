"""A batch running on a simulated worker, and where its iterations stand at a moment (`sim.driver` uses them).

A multi-iteration batch (the fast mode) is one timeout in SimPy; what it had done by a moment is read from its
iterations' durations: where an interrupt ends it (`next_boundary`), what a run's cutoff applies of it
(`completed`), and how many iterations the core's mid-batch reads count (`iterations_done`: the KV blocks a
router sees, `SimDriver.kv_blocks_now`; `done_by`: with their busy seconds, `SimDriver.batch_now`).
"""

from __future__ import annotations

import numpy as np

from sim.stepped_decode import steps_boundary, steps_completed

__all__ = ["RunningBatch", "completed", "done_by", "iterations_done", "next_boundary"]


class RunningBatch:
    """A batch executing on a simulated worker (made in `SimDriver._start_batch`, every slot set there: no
    ``__init__`` call a batch): ``batch``, ``start_s``; ``first_s``, a prefill's duration when decode iterations
    follow it, else 0; ``durations``, the per-iteration durations of a multi-iteration batch, and ``ends_s``, their
    cumulative sums, computed on the first interrupt; or ``steps``, (iterations, duration) runs (stepped models);
    ``timer``, the timeout that ends this batch now (an interrupt replaces it; its value is (worker, iterations it
    ends after, busy seconds))."""

    __slots__ = ("batch", "start_s", "first_s", "durations", "ends_s", "steps", "timer")


def _ends(rb: RunningBatch) -> np.ndarray:
    ends = rb.ends_s
    if ends is None:
        ends = rb.ends_s = np.cumsum(rb.durations)
    return ends


def next_boundary(rb: RunningBatch, elapsed: float) -> tuple[int, float]:
    """(k, end): the first iteration boundary at or after ``elapsed`` seconds into the multi-iteration batch ``rb``
    (k >= 1 iterations, ending ``end`` seconds after its start; end 0.0 past its last iteration)."""
    first = rb.first_s
    if first and elapsed <= first:
        return 1, first  # still in the prefill: it ends with it
    if rb.steps is not None:
        k, end = steps_boundary(rb.steps, elapsed - first)
    else:
        ends = _ends(rb)
        k = int(np.searchsorted(ends, elapsed - first, side="left")) + 1  # first boundary at or after now
        end = float(ends[k - 1]) if k <= len(ends) else 0.0
    if first:
        k, end = k + 1, first + end
    return k, end


def completed(rb: RunningBatch, elapsed: float) -> tuple[int, float]:
    """(k, end): the iterations of the multi-iteration batch ``rb`` that ended by ``elapsed`` seconds into it
    (k >= 0) and when the last of them ended, in seconds after its start (0.0 when none did)."""
    first = rb.first_s
    if elapsed < first:
        return 0, 0.0  # still in its prefill
    if rb.steps is not None:
        k, end = steps_completed(rb.steps, elapsed - first)
    else:
        ends = _ends(rb)
        k = int(np.searchsorted(ends, elapsed - first, side="right"))
        end = float(ends[k - 1]) if k else 0.0
    if first:
        k, end = k + 1, first + end
    return k, end


def done_by(rb: RunningBatch, now_s: float) -> tuple[int, float]:
    """(k, end): the iterations of ``rb`` the exact mode would have reported finished by ``now_s``, its own end (not
    delivered yet) left out, and when the last of them ended, in seconds after its start ((0, 0.0) for a batch of
    one iteration, or when none did)."""
    if rb.durations is None and rb.steps is None:
        return 0, 0.0
    k, end = completed(rb, now_s - rb.start_s)
    last = rb.timer._value[1] - 1  # the iteration it ends after (an interrupt's, or its plan's)
    if k > last:  # its end is due now, not delivered yet: up to the iteration before it
        k, end = last, (_iteration_end(rb, last) if last else 0.0)
    return k, end


def _iteration_end(rb: RunningBatch, j: int) -> float:
    """Seconds after its start when iteration ``j`` (>= 1) of the multi-iteration batch ``rb`` ended."""
    first = rb.first_s
    if first:
        if j == 1:
            return first
        j -= 1
    if rb.steps is not None:
        t = 0.0
        for n, d in rb.steps:
            if j <= n:
                return first + t + j * d
            t += n * d
            j -= n
        return first + t
    return first + float(_ends(rb)[j - 1])


def iterations_done(rb: RunningBatch, now_s: float) -> int:
    """The iterations of ``rb`` the exact mode would have reported finished by ``now_s``, its own end (not
    delivered yet) left out: 0 for a batch of one iteration (`done_by`'s count)."""
    return done_by(rb, now_s)[0]
