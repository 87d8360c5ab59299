"""Streaming transforms over TraceRequest iterators: cut a window, speed up, play back to back,
scale the rate (by one factor, or by a factor that changes over time), scale lengths, cap.

Each takes and returns an iterator in arrival order and holds at most one request of
lookahead (a rate change with ``copies="shuffled"``: one block of 64 input requests and their
copies; with ``copies="shifted"``: one 600-s window's), so they compose over million-row traces.
Randomness only from a passed-in numpy Generator. Where the copies of a rate change arrive is
`sim.traces.copies`.
"""

from __future__ import annotations

import itertools
import math
import numbers
import string
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ._rng import require_rng
from .copies import COPIES, SHIFT_WINDOW_S, SHUFFLE_BLOCK, copy_slots, kept_apart, placed
from .record import TraceRequest, with_arrival

__all__ = ["time_window", "speed_up", "repeat", "scale_rate", "rate_profile", "rate_profile_points", "limit", "COPIES",
           "SHUFFLE_BLOCK", "SHIFT_WINDOW_S", "scale_lengths", "cap_lengths", "apply_transforms", "TransformValueError"]

#: Something that yields the trace's requests afresh at each call (a repeat reads it again).
TraceSource = Callable[[], Iterable[TraceRequest]]


class TransformValueError(ValueError):
    """A transform's argument out of its range. The message names each argument by its keyword
    (``speed_up must be a finite number > 0, got 0.0``); `named` says it with other names for
    them, such as the command-line options that set them (``--speed-up must be ...``)."""

    def __init__(self, template: str, *values: object) -> None:
        #: ``{keyword}`` fields name arguments, ``{0}``, ``{1}`` show ``values``.
        self.template, self.values = template, values
        super().__init__(self.named({}))

    def named(self, names: Mapping[str, str], shown: Callable[[object], str] = repr) -> str:
        """The message with each argument's keyword replaced by ``names[keyword]`` where given,
        and each value written by ``shown``."""
        return string.Formatter().vformat(self.template, [shown(v) for v in self.values], _Names(names))


class _Names(dict):
    def __missing__(self, keyword: str) -> str:
        return keyword


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < math.inf):
        raise TransformValueError(f"{{{name}}} must be a finite number > 0, got {{0}}", value)
    return float(value)


def _optional_time(name: str, value: object) -> float | None:
    """A window's end: a finite number of seconds >= 0 (every trace's arrivals are; a negative start shifted
    every arrival later, adding idle time the run was billed for), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise TransformValueError(f"{{{name}}} must be a finite number of seconds >= 0, got {{0}}", value)
    return float(value)


def time_window(reqs: Iterable[TraceRequest], start_s: float | None = None, end_s: float | None = None,
                rebase: bool = True) -> Iterator[TraceRequest]:
    """Requests with start_s <= arrival_s < end_s (None = open side).

    rebase=True shifts arrivals by -start_s so the window starts at 0.0 (an idle lead-in inside
    the window is kept, so rates stay true). Stops reading at the first arrival >= end_s, which
    relies on the input being in arrival order (all readers guarantee it).
    """
    start = _optional_time("start_s", start_s)
    end = _optional_time("end_s", end_s)
    if start is not None and end is not None and end <= start:
        raise TransformValueError("{end_s} ({0}) must be greater than {start_s} ({1})", end, start)
    return _window(reqs, start, end, rebase and bool(start))


def _window(reqs: Iterable[TraceRequest], start: float | None, end: float | None,
            shift: bool) -> Iterator[TraceRequest]:
    for r in reqs:
        a = r.arrival_s
        if start is not None and a < start:
            continue
        if end is not None and a >= end:
            return
        yield with_arrival(r, a - start) if shift else r


def speed_up(reqs: Iterable[TraceRequest], factor: float) -> Iterator[TraceRequest]:
    """Compress time by `factor` (arrival_s / factor): 2.0 replays the same requests twice as fast."""
    f = _positive("speed_up", factor)
    return _speed_up(reqs, f)


def _speed_up(reqs: Iterable[TraceRequest], f: float) -> Iterator[TraceRequest]:
    if f == 1.0:
        yield from reqs
        return
    for r in reqs:
        yield with_arrival(r, r.arrival_s / f)


def repeat(open_copy: TraceSource, times: int) -> Iterator[TraceRequest]:
    """The trace played ``times`` times back to back, reading it again for each copy.

    A copy starts one mean inter-arrival gap (of the copy before) after the previous copy's last
    arrival, so the seam looks like the trace itself; within a copy the arrivals keep their
    spacing. The first copy is the trace unchanged; the ``k``-th after it has ids
    ``"{id}.c{k}"`` (a trace's own id that ends like one, ``a.c1``, gets ``.c0`` appended, so no copy
    takes it: `kept_apart`). A trace of a single request repeats it at the same instant. Memory does not
    grow with ``times``: nothing but the current copy's first and last arrival is kept.
    """
    if not callable(open_copy):
        raise TypeError("repeat needs a function that opens the trace again for each copy")
    _check_times(times)
    return _repeat(open_copy, int(times))


def _check_times(times: object) -> None:
    if isinstance(times, bool) or not isinstance(times, numbers.Integral) or times < 1:
        raise TransformValueError("{repeat} must be an integer >= 1, got {0}", times)


def _repeat(open_copy: TraceSource, times: int) -> Iterator[TraceRequest]:
    start = None  # where the current copy's first arrival lands
    for k in range(times):
        first = last = None
        n = 0
        suffix = f".c{k}"
        for r in kept_apart(open_copy(), "c") if times > 1 else open_copy():
            a = r.arrival_s
            if first is None:
                first = a
                if start is None:
                    start = a
            last = a
            n += 1
            if k == 0:
                yield r
            else:
                yield with_arrival(r, start + (a - first), r.request_id + suffix)
        if first is None:
            return  # an empty trace: nothing to repeat
        span = last - first
        start += span + (span / (n - 1) if n > 1 else 0.0)



def scale_rate(reqs: Iterable[TraceRequest], factor: float, rng: np.random.Generator, *,
               max_jitter_s: float | None = None, copies: str = "clumped") -> Iterator[TraceRequest]:
    """Change the request rate by `factor` while keeping the trace's time axis.

    Each request is emitted floor(factor) or ceil(factor) times (the fractional part is the
    seeded probability of the extra copy), so factor < 1 is Bernoulli thinning and factor > 1
    replicates. The original keeps its id; copies get ids "{id}.r1", "{id}.r2", ... and arrive at
    sorted uniform-random offsets inside the gap to the next input request (capped at
    max_jitter_s when given, to keep bursts tight), so order is kept. Copies of the last request
    arrive with it.

    ``copies="shuffled"`` keeps those arrival slots (draw for draw: the same times as
    ``"clumped"``) but deals the copies of each block of ``SHUFFLE_BLOCK`` consecutive input
    requests to the block's slots in a random order (drawn from a child of ``rng``): a request is
    still copied as many times, its copies spread over its block instead of all in the gap after
    it. At x10, clumped copies turn one long prompt into ten within seconds, a burst of identical
    work no real traffic at ten times the rate has; shuffled, the block's mix of lengths arrives
    at the block's pace. A copy keeps its donor's id stem ("{donor id}.r{n}").

    ``copies="shifted"`` (the same copy counts, draw for draw) models ten times as many users
    rather than each user ten times: the n-th copies of the trace's requests form a stream with the
    trace's own arrival pattern, and each stream is rotated in time within each ``SHIFT_WINDOW_S``
    window (from time 0; the first window from the first arrival, the last to the last arrival) by
    an offset drawn for that stream and window from a child of ``rng``. Each window keeps its
    count, so the rate's shape at that resolution is kept; a burst of the trace recurs in every
    stream, but at unrelated times, so bursts no longer add up: clumped or shuffled, a second with
    5 arrivals becomes one with 50 at x10; shifted, it is one of the trace's seconds ten times over,
    at different seconds. Copy n of a request has id "{id}.r{n}", as clumped.

    With ``factor`` > 1, a trace's own id that ends like a copy's (``a.r1``) gets ``.r0`` appended,
    so no copy takes it (`kept_apart`): every id stays unique.
    """
    f = _positive("rate_scale", factor)
    gen = require_rng(rng, "scale_rate")
    if max_jitter_s is not None:
        max_jitter_s = _positive("max_jitter_s", max_jitter_s)
    if f > 1:
        reqs = kept_apart(reqs, "r")
    return placed(copy_slots(reqs, lambda _a: f, gen, max_jitter_s), _checked_copies(copies), gen)


def _checked_copies(copies: object) -> str:
    if copies not in COPIES:
        raise TransformValueError("{copies} must be " + ", ".join(f"'{c}'" for c in COPIES[:-1])
                                  + f" or '{COPIES[-1]}', got {{0}}", copies)
    return str(copies)


def rate_profile(reqs: Iterable[TraceRequest], points: Sequence[Sequence[float]], rng: np.random.Generator, *,
                 max_jitter_s: float | None = None, copies: str = "clumped") -> Iterator[TraceRequest]:
    """Change the request rate by a factor that changes over the trace's time: ``scale_rate`` with the
    factor at each request's arrival.

    ``points`` are ``(time_s, factor)`` pairs, times strictly increasing, factors finite and >= 0
    (0 drops every request there); between two points the factor is linear in time, before the first
    and after the last it is that point's. ``[(0, 1), (14400, 2)]``: the load doubles over four hours.
    Each request is emitted floor(f) or ceil(f) times and its copies placed as ``scale_rate`` does
    (ids ``"{id}.r1"``, ...; offsets within the gap to the next input request, capped at max_jitter_s;
    ``copies``: clumped after their request, shuffled within blocks or shifted as whole streams;
    a trace's own id ending like a copy's gets ``.r0`` appended where a factor is > 1, as there).
    """
    checked = rate_profile_points(points)
    gen = require_rng(rng, "rate_profile")
    if max_jitter_s is not None:
        max_jitter_s = _positive("max_jitter_s", max_jitter_s)
    if max(f for _, f in checked) > 1:
        reqs = kept_apart(reqs, "r")
    factor_at = _ProfileFactor([t for t, _ in checked], [f for _, f in checked])
    return placed(copy_slots(reqs, factor_at, gen, max_jitter_s), _checked_copies(copies), gen)


def rate_profile_points(points: object, label: Callable[[int], str] | None = None) -> tuple[tuple[float, float], ...]:
    """``points`` checked as ``rate_profile`` takes them, as a tuple of ``(time_s, factor)`` float pairs.
    A bad point is a ValueError starting with ``label(i)`` (default ``"rate_profile point {i}"``, 0-based)."""
    name = label or (lambda i: f"rate_profile point {i}")
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
        raise ValueError(f"rate_profile points must be a non-empty list of (time_s, factor) pairs, got {points!r}")
    out: list[tuple[float, float]] = []
    for i, pt in enumerate(points):
        if isinstance(pt, (str, bytes)) or not isinstance(pt, Sequence) or len(pt) != 2:
            raise ValueError(f"{name(i)} must be a (time_s, factor) pair, got {pt!r}")
        t, f = pt
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(float(t)):
            raise ValueError(f"{name(i)}: time_s must be a finite number, got {t!r}")
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (0 <= float(f) < math.inf):
            raise ValueError(f"{name(i)}: factor must be a finite number >= 0, got {float(f):g}")
        if out and float(t) <= out[-1][0]:
            raise ValueError(f"{name(i)}: its time, {float(t):g} s, must be later than the point before's "
                             f"({out[-1][0]:g} s): points go in time order")
        out.append((float(t), float(f)))
    return tuple(out)


class _ProfileFactor:
    """A rate profile's factor at an arrival time; arrivals come in order, so it walks the points once."""

    __slots__ = ("times", "factors", "j")

    def __init__(self, times: list[float], factors: list[float]) -> None:
        self.times, self.factors, self.j = times, factors, 0  # j: the last point at or before the arrival

    def __call__(self, a: float) -> float:
        times, factors = self.times, self.factors
        last = len(times) - 1
        j = self.j
        while j < last and times[j + 1] <= a:
            j += 1
        self.j = j
        if a <= times[0]:
            return factors[0]
        if j == last:
            return factors[last]
        return factors[j] + (factors[j + 1] - factors[j]) * (a - times[j]) / (times[j + 1] - times[j])


def limit(reqs: Iterable[TraceRequest], n: int) -> Iterator[TraceRequest]:
    """The first n requests (stops reading after them)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise TransformValueError("{limit} must be an integer >= 0, got {0}", n)
    return itertools.islice(reqs, int(n))


def scale_lengths(reqs: Iterable[TraceRequest], prompt_scale: float | None = None,
                  output_scale: float | None = None) -> Iterator[TraceRequest]:
    """Each request with its prompt's tokens multiplied by ``prompt_scale`` and its output's by
    ``output_scale`` (None: unchanged), rounded to the nearest integer (halves to even, as
    ``round``) and at least 1: a long-context trace served by a small model with its length
    distribution kept (what ``cap_lengths`` alone loses: every long prompt cut to the cap).

    A request whose prompt length changes loses its text (the text is the trace's prompt) and its
    prefix-block hashes (``hash_ids``, ``hash_block_tokens``): a block of the trace's tokens is
    no whole number of scaled tokens (Mooncake's 512 at x0.009 is 4.5), so a prefix cache could
    not tell how much of the new prompt a block covers. With ``prefix-cache`` enabled a scaled
    trace therefore has no prefix hits; the live replay drops the hashes anyway."""
    p = None if prompt_scale is None else _positive("prompt_scale", prompt_scale)
    o = None if output_scale is None else _positive("output_scale", output_scale)
    return _scale_lengths(reqs, p, o)


def _scale_lengths(reqs: Iterable[TraceRequest], p_scale: float | None,
                   o_scale: float | None) -> Iterator[TraceRequest]:
    from dataclasses import replace

    for r in reqs:
        p = r.prompt_tokens if p_scale is None else max(1, round(r.prompt_tokens * p_scale))
        o = r.output_tokens if o_scale is None else max(1, round(r.output_tokens * o_scale))
        if p == r.prompt_tokens and o == r.output_tokens:
            yield r
        elif p == r.prompt_tokens:
            yield replace(r, output_tokens=o)
        else:
            yield replace(r, prompt_tokens=p, output_tokens=o, prompt=None, hash_ids=(), hash_block_tokens=None)


def cap_lengths(reqs: Iterable[TraceRequest], max_prompt_tokens: int | None = None,
                max_output_tokens: int | None = None) -> Iterator[TraceRequest]:
    """Each request with its prompt cut to at most ``max_prompt_tokens`` and its output to at most
    ``max_output_tokens`` (None: no cap): a trace served by a model with a short context. A request
    whose prompt is cut loses its text (the text is the uncut prompt)."""
    for name, value in (("max_prompt_tokens", max_prompt_tokens), ("max_output_tokens", max_output_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise TransformValueError(f"{{{name}}} must be an integer >= 1 or None, got {{0}}", value)
    return _cap_lengths(reqs, max_prompt_tokens, max_output_tokens)


def _cap_lengths(reqs: Iterable[TraceRequest], p_max: int | None, o_max: int | None) -> Iterator[TraceRequest]:
    from dataclasses import replace

    for r in reqs:
        p = r.prompt_tokens if p_max is None else min(r.prompt_tokens, p_max)
        o = r.output_tokens if o_max is None else min(r.output_tokens, o_max)
        if p == r.prompt_tokens and o == r.output_tokens:
            yield r
        else:
            hashes = r.hash_ids  # the prefix blocks the cut prompt still covers
            if hashes and r.hash_block_tokens and p < r.prompt_tokens:
                hashes = hashes[:-(-p // r.hash_block_tokens)]
            yield replace(r, prompt_tokens=p, output_tokens=o, prompt=r.prompt if p == r.prompt_tokens else None,
                          hash_ids=hashes)


# apply_transforms' keyword names shadow these functions inside it.
_speed_up_fn = speed_up
_limit_fn = limit
_rate_profile_fn = rate_profile


def apply_transforms(reqs: Iterable[TraceRequest] | TraceSource, *,
                     window: Sequence[float | None] | Mapping[str, Any] | None = None,
                     speed_up: float | None = None, repeat: int | None = None, rate_scale: float | None = None,
                     limit: int | None = None, rng: np.random.Generator | None = None,
                     max_prompt_tokens: int | None = None, max_output_tokens: int | None = None,
                     rate_profile: Sequence[Sequence[float]] | None = None, prompt_scale: float | None = None,
                     output_scale: float | None = None, copies: str | None = None) -> Iterator[TraceRequest]:
    """Apply the usual trace edits in a fixed, documented order:
    window -> speed_up -> repeat -> rate (rate_scale, rate_profile) -> limit -> length scales
    (prompt_scale, output_scale) -> length caps.

    The window is cut in the original trace's time (in each copy, when repeated); ``rate_profile``'s
    times are those of the result (after the window's rebase, the speed-up and the copies: the
    replay's own seconds); with both, the rate factor is ``rate_scale`` times the profile's, in one
    pass (a one-point profile is ``scale_rate``, draw for draw); limit counts requests after the rate
    change. window: (start_s, end_s) with None for an open side, or
    {"start_s":..., "end_s":..., "rebase":...}. ``reqs`` is a stream of requests, or a function
    that opens one (needed for ``repeat`` > 1, which reads the trace once per copy; a list works
    too). rng is needed only for rate_scale and rate_profile; ``copies`` (None: ``"clumped"``) places
    the copies they make (``scale_rate``). All arguments are checked before anything is read.
    """
    _edited(iter(()), window, speed_up)  # checks them now, reading nothing
    points = rate_profile_points(rate_profile) if rate_profile is not None else None
    if points is not None and rate_scale is not None:
        scale = _positive("rate_scale", rate_scale)
        points = tuple((t, f * scale) for t, f in points)
    placing = _checked_copies("clumped" if copies is None else copies)
    if repeat is not None and repeat != 1:
        _check_times(repeat)
        if callable(reqs):
            source: TraceSource = reqs
        elif isinstance(reqs, Collection):  # a list or another collection: read again for each copy
            source = lambda: reqs  # noqa: E731
        else:
            raise ValueError("repeat needs a trace that can be read again: pass a function that opens it "
                             "(or a list), not a one-pass stream")
        edit = lambda: _edited(source(), window, speed_up)  # noqa: E731
        out: Iterable[TraceRequest] = _repeat(edit, int(repeat))
    else:
        out = _edited(reqs() if callable(reqs) else reqs, window, speed_up)
    if points is not None:
        out = _rate_profile_fn(out, points, rng, copies=placing)  # type: ignore[arg-type]  # it checks rng
    elif rate_scale is not None:
        out = scale_rate(out, rate_scale, rng, copies=placing)  # type: ignore[arg-type]  # it checks rng
    if limit is not None:
        out = _limit_fn(out, limit)
    if prompt_scale is not None or output_scale is not None:
        out = scale_lengths(out, prompt_scale, output_scale)
    if max_prompt_tokens is not None or max_output_tokens is not None:
        out = cap_lengths(out, max_prompt_tokens, max_output_tokens)
    return iter(out)


def _edited(reqs: Iterable[TraceRequest], window: Sequence[float | None] | Mapping[str, Any] | None,
            speed_up: float | None) -> Iterable[TraceRequest]:
    """A copy of the trace with its window cut and its time sped up."""
    out: Iterable[TraceRequest] = reqs
    if window is not None:
        if isinstance(window, Mapping):
            unknown = set(window) - {"start_s", "end_s", "rebase"}
            if unknown:
                raise ValueError(f"unknown window key(s) {sorted(unknown)}; valid keys: start_s, end_s, rebase")
            out = time_window(out, window.get("start_s"), window.get("end_s"), window.get("rebase", True))
        elif isinstance(window, (tuple, list)) and len(window) == 2:
            out = time_window(out, window[0], window[1])
        else:
            raise ValueError(f"window must be (start_s, end_s) or a mapping, got {window!r}")
    if speed_up is not None:
        out = _speed_up_fn(out, speed_up)
    return out
