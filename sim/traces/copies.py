"""Where a replicated request's copies arrive: the placements ``scale_rate`` and ``rate_profile``
(`sim.traces.transforms`) choose between with ``copies``.

The rate change first gives each input request its number of copies and their arrival slots
(`copy_slots`, the same draws whatever the placement); `placed` then puts the copies there
(``"clumped"``), deals them over a block's slots (``"shuffled"``) or makes the n-th copies one more
stream of the trace's own arrivals, rotated within each window (``"shifted"``). Randomness only from
a passed-in numpy Generator; the placements that draw take a child of it, so the counts and slots
stay those of ``"clumped"``, draw for draw.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .record import TraceRequest, with_arrival

__all__ = ["COPIES", "SHUFFLE_BLOCK", "SHIFT_WINDOW_S", "copy_slots", "placed", "kept_apart"]


def kept_apart(reqs: Iterable[TraceRequest], marker: str) -> Iterator[TraceRequest]:
    """The requests, each id that ends like one of the copies about to be made (``.{marker}`` and
    digits: ``a.r1`` for a rate change's copies, ``a.c1`` for repeat's) with ``.{marker}0`` appended.

    Copies are named ``{id}.{marker}{n}`` with n >= 1, when they are made: a trace's own ``a.r1``,
    read later, would take the id of ``a``'s first copy, and a run refuses the second row of an
    id. Knowing which ids are yet to come would take a pass over the trace or a set of every id
    (memory that grows with the copies); instead the ids that could clash are moved out of the
    copies' way, so that ids unique on the way in stay unique on the way out: a copy's id ends in
    ``.{marker}`` and digits not starting with 0, a moved id in ``.{marker}0``, every other id in
    neither, so the copy's or the moved id's ending is taken off unambiguously to give back the
    id it was made from. Only such ids change (``a.r1`` -> ``a.r1.r0``), only when copies are made."""
    ending = re.compile(rf"\.{marker}[0-9]+\Z")
    suffix = f".{marker}0"
    for r in reqs:
        rid = r.request_id
        if "." in rid and ending.search(rid):
            yield with_arrival(r, r.arrival_s, rid + suffix)
        else:
            yield r

class _Uniforms:
    """Buffered U[0,1) draws: numpy per-scalar calls are slow, chunks are deterministic too."""

    __slots__ = ("rng", "buf", "i")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.buf, self.i = rng, [], 0

    def __call__(self) -> float:
        if self.i >= len(self.buf):
            self.buf, self.i = self.rng.random(4096).tolist(), 0
        u = self.buf[self.i]
        self.i += 1
        return u


#: How ``scale_rate`` and ``rate_profile`` place a replicated request's copies: ``"clumped"``, each in
#: the gap after its own request; ``"shuffled"``, the same arrival slots, the copies of each block of
#: ``SHUFFLE_BLOCK`` consecutive input requests dealt to them in a seeded random order; ``"shifted"``,
#: the n-th copies of all requests as one more stream of the trace's own arrivals, rotated in time
#: within each ``SHIFT_WINDOW_S`` window by an offset of its own.
COPIES = ("clumped", "shuffled", "shifted")
#: Input requests per block whose copies ``copies="shuffled"`` deals out together.
SHUFFLE_BLOCK = 64
#: The windows (from time 0) within which ``copies="shifted"`` rotates each stream of copies: every
#: window keeps its count, so the rate's shape is kept at this resolution, and bursts shorter than it
#: land at unrelated times in each stream.
SHIFT_WINDOW_S = 600.0

def copy_slots(reqs: Iterable[TraceRequest], factor_at: Callable[[float], float], rng: np.random.Generator,
                cap: float | None) -> Iterator[tuple[TraceRequest, Sequence[float]]]:
    """Each kept input request with its copies' arrival times: the request emitted floor(f) or
    ceil(f) times for f = ``factor_at(arrival)``, copies at sorted uniform offsets in the gap to the
    next input request (at most ``cap``). Requests emitted 0 times are left out."""
    u = _Uniforms(rng)
    it = iter(reqs)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        a = cur.arrival_s
        f = factor_at(a)
        whole = math.floor(f)
        frac = f - whole
        k = whole + (1 if frac and u() < frac else 0)
        if k:
            slots: Sequence[float] = ()  # (no list made for a request without copies: thinning's every request)
            if k > 1:
                gap = nxt.arrival_s - a if nxt is not None else 0.0
                if cap is not None and gap > cap:
                    gap = cap
                slots = [a + off for off in sorted(u() * gap for _ in range(k - 1))]
            yield cur, slots
        cur = nxt


def placed(planned: Iterator[tuple[TraceRequest, Sequence[float]]], copies: str,
            rng: np.random.Generator) -> Iterator[TraceRequest]:
    if copies == "shuffled":
        return _shuffled(planned, rng.spawn(1)[0])  # a child: the slots' draws stay those of "clumped"
    if copies == "shifted":
        return _shifted(planned, rng.spawn(1)[0])  # (the same: the counts are those of "clumped")
    return _clumped(planned)


def _clumped(planned: Iterable[tuple[TraceRequest, Sequence[float]]]) -> Iterator[TraceRequest]:
    for cur, slots in planned:
        yield cur
        stem = cur.request_id
        for n, a in enumerate(slots, 1):
            yield with_arrival(cur, a, f"{stem}.r{n}")


def _shuffled(planned: Iterable[tuple[TraceRequest, Sequence[float]]],
              rng: np.random.Generator) -> Iterator[TraceRequest]:
    block: list[tuple[TraceRequest, Sequence[float]]] = []
    for item in planned:
        block.append(item)
        if len(block) == SHUFFLE_BLOCK:
            yield from _dealt(block, rng)
            block = []
    yield from _dealt(block, rng)


def _dealt(block: list[tuple[TraceRequest, Sequence[float]]], rng: np.random.Generator) -> Iterator[TraceRequest]:
    """A block's requests in order, its copy slots filled with its copies in a random order."""
    donors = [i for i, (_, slots) in enumerate(block) for _ in slots]
    order = rng.permutation(len(donors)).tolist() if len(donors) > 1 else list(range(len(donors)))
    made = [0] * len(block)  # copies of each request dealt so far: its copies' numbers
    k = 0
    for cur, slots in block:
        yield cur
        for a in slots:
            d = donors[order[k]]
            k += 1
            made[d] += 1
            donor = block[d][0]
            yield with_arrival(donor, a, f"{donor.request_id}.r{made[d]}")


def _shifted(planned: Iterable[tuple[TraceRequest, Sequence[float]]],
             rng: np.random.Generator) -> Iterator[TraceRequest]:
    """The requests and their copies, one ``SHIFT_WINDOW_S`` window at a time (its copy slots'
    times unused: only their number, the request's count of copies)."""
    u = _Uniforms(rng)
    width = SHIFT_WINDOW_S
    window: list[tuple[TraceRequest, int]] = []
    index = start = 0.0
    for cur, slots in planned:
        a = cur.arrival_s
        i = math.floor(a / width)
        if not window:
            index, start = i, a  # the first window starts at the first arrival
        elif i != index:
            yield from _rotated(window, start, (index + 1) * width, u)
            window = []
            index, start = i, i * width
        window.append((cur, len(slots)))
    if window:
        yield from _rotated(window, start, window[-1][0].arrival_s, u)  # the last window ends at its last arrival


def _rotated(window: list[tuple[TraceRequest, int]], lo: float, hi: float,
             u: Callable[[], float]) -> Iterator[TraceRequest]:
    """A window's requests and their copies in time order, copy n of each request rotated within
    [lo, hi) by stream n's offset (originals first at equal times)."""
    span = hi - lo
    out: list[tuple[float, TraceRequest, str | None]] = [(r.arrival_s, r, None) for r, _ in window]
    streams = max(k for _, k in window)
    for n in range(1, streams + 1):
        shift = u() * span
        suffix = f".r{n}"
        for r, k in window:
            if k >= n:
                t = lo + (r.arrival_s - lo + shift) % span if span > 0 else r.arrival_s
                out.append((t, r, suffix))
    out.sort(key=lambda item: item[0])  # stable: originals, then stream 1, 2, ... at equal times
    for t, r, suffix in out:
        yield r if suffix is None else with_arrival(r, t, r.request_id + suffix)
