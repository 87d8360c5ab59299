"""Trace windows: what the calibration replays, the slices it predicts, and their load.

Long-context traces are scaled to what a tiny CPU model serves: prompt and output lengths are
multiplied by a factor (``auto``: bring the median to a target) and capped, identically on
both sides. The out-of-sample protocol cuts the trace into consecutive, disjoint windows
(`carve_windows`): the calibration window first, then the capacity window and the evaluated
slices, each a later time range of the trace than the calibration's; their scale factors come
from the calibration window alone.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.traces import TraceRequest, apply_transforms, read_trace

PEAK_WINDOW_S = 10.0


class TraceTooShort(SystemExit):
    """A trace with too few requests for a window: its message is one line naming the window, what it needs and
    has; ``benchmarks/fidelity.py`` prints it and exits with status 2 (uncaught, it exits as SystemExit does)."""

    EXIT_STATUS = 2


@dataclass
class Slices:
    """The calibration slices around the evaluated one: scaled lengths, arrivals from 0 at trace speed."""

    calibration: list[TraceRequest]  # the requests just before the evaluated ones
    evaluation: list[TraceRequest]
    prompt_scale: float
    output_scale: float
    after: list[TraceRequest] = field(default_factory=list)  # the requests just after them

    def at_speed(self, speed_up: float) -> tuple[list[TraceRequest], list[TraceRequest], list[TraceRequest]]:
        def fast(rs: list[TraceRequest]) -> list[TraceRequest]:
            return [TraceRequest(r.request_id, r.arrival_s / speed_up, r.prompt_tokens, r.output_tokens, None,
                                 r.tenant, r.priority) for r in rs]

        return fast(self.calibration), fast(self.evaluation), fast(self.after)


def _scale(value: str, values: list[int], target_p50: float) -> float:
    if value != "auto":
        return float(value)
    median = statistics.median(values) if values else 1
    return min(1.0, target_p50 / max(1.0, median))  # only ever shrink


def scaled(r: TraceRequest, arrival_s: float, prompt_scale: float, output_scale: float, max_prompt: int,
           max_output: int) -> TraceRequest:
    """``r`` with lengths scaled and capped, a new arrival time, and no prefix hashes (no live prefix cache)."""
    prompt = min(max_prompt, max(1, round(r.prompt_tokens * prompt_scale)))
    output = min(max_output, max(1, round(r.output_tokens * output_scale)))
    return TraceRequest(r.request_id, arrival_s, prompt, output, None, r.tenant, r.priority)


def load_slices(trace: Path, fmt: str | None, *, start_s: float | None, calibration: int, limit: int,
                prompt_scale: str, output_scale: str, prompt_p50: float, output_p50: float, max_prompt: int,
                max_output: int, seed: int, after: int = 0, options: dict | None = None) -> Slices:
    """The calibration slice, the evaluation slice after it and up to ``after`` requests after that
    (a second calibration slice, when the trace has them), lengths scaled alike. ``options``: the
    trace format's (``--opt``)."""
    reader = read_trace(trace, fmt, rng=np.random.default_rng([seed, 11]), **(options or {}))
    window = (start_s, None) if start_s is not None else None
    raw = list(itertools.islice(apply_transforms(reader, window=window), calibration + limit + after))
    if len(raw) < calibration + 2:
        raise SystemExit(f"{trace}: only {len(raw)} requests after {start_s or 0}s; need more than {calibration + 1}")
    cal_raw, ev_raw, after_raw = raw[:calibration], raw[calibration:calibration + limit], raw[calibration + limit:]
    ps = _scale(prompt_scale, [r.prompt_tokens for r in cal_raw + ev_raw], prompt_p50)
    os_ = _scale(output_scale, [r.output_tokens for r in cal_raw + ev_raw], output_p50)

    def rebase(rs: list[TraceRequest]) -> list[TraceRequest]:
        t0 = rs[0].arrival_s if rs else 0.0
        return [scaled(r, r.arrival_s - t0, ps, os_, max_prompt, max_output) for r in rs]

    return Slices(rebase(cal_raw), rebase(ev_raw), ps, os_, rebase(after_raw) if len(after_raw) > 1 else [])


def isolated_service_s(model: Any, r: TraceRequest) -> float:
    """Seconds the worker needs for ``r`` alone: its prefill, then its decodes at batch size 1."""
    from sim.latency.base import IterationShape

    prefill = model.iteration_s(IterationShape((r.prompt_tokens,), (0,), ()))
    decode = model.iteration_s(IterationShape((), (), (r.prompt_tokens + r.output_tokens // 2,)))
    return prefill + (r.output_tokens - 1) * decode


def peak_load(service_s: np.ndarray, arrival_s: np.ndarray, speed_up: float, window_s: float = PEAK_WINDOW_S) -> float:
    """The busiest ``window_s`` of the replay: service time arriving in it over its length."""
    t = arrival_s / speed_up
    ends = np.searchsorted(t, t + window_s, side="left")
    cum = np.concatenate([[0.0], np.cumsum(service_s)])
    return float(np.max(cum[ends] - cum[np.arange(len(t))]) / window_s)


def auto_speed_up(model: Any, reqs: list[TraceRequest], *, utilization: float, duration_s: float) -> float:
    """The fastest replay (at most towards ``duration_s``) whose busiest 10 s stay under ``utilization``.

    Load counts each request's service time alone: conservative (batching serves a burst
    faster), so a bursty trace stays servable instead of piling up a backlog whose length - not
    the simulator - would decide every latency, and which two live runs of the same slice do not
    even reproduce. A trace busier than the worker is slowed down (speed-up < 1), but the replay
    never lasts more than 3 x ``duration_s``.
    """
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    if span <= 0:
        return 1.0
    service = np.array([isolated_service_s(model, r) for r in reqs])
    arrival = np.array([r.arrival_s for r in reqs])
    speed, floor = max(1.0, span / duration_s), span / (3 * duration_s)
    while speed > floor and peak_load(service, arrival, speed) > utilization:
        speed *= 0.95
    return max(speed, floor)



# --- the out-of-sample protocol's windows ---------------------------------------------------------


def read_requests(trace: Path, fmt: str | None, *, start_s: float | None, count: int, seed: int,
                  options: dict | None = None) -> list[TraceRequest]:
    """Up to ``count`` requests of the trace from ``start_s`` on, in arrival order, as the trace has them
    (read with the trace format's ``options``, ``--opt``)."""
    reader = read_trace(trace, fmt, rng=np.random.default_rng([seed, 11]), **(options or {}))
    window = (start_s, None) if start_s is not None else None
    return list(itertools.islice(apply_transforms(reader, window=window), count))


@dataclass(frozen=True)
class Scaling:
    """Length scaling, identical on both sides; fitted on the calibration window only."""

    prompt: float
    output: float
    max_prompt: int
    max_output: int

    @classmethod
    def fit(cls, reqs: list[TraceRequest], *, prompt_scale: str, output_scale: str, prompt_p50: float,
            output_p50: float, max_prompt: int, max_output: int) -> Scaling:
        return cls(_scale(prompt_scale, [r.prompt_tokens for r in reqs], prompt_p50),
                   _scale(output_scale, [r.output_tokens for r in reqs], output_p50), max_prompt, max_output)

    def apply(self, rs: list[TraceRequest]) -> list[TraceRequest]:
        """``rs`` scaled, arrivals rebased to 0 (the trace's own gaps kept)."""
        t0 = rs[0].arrival_s if rs else 0.0
        return [scaled(r, r.arrival_s - t0, self.prompt, self.output, self.max_prompt, self.max_output) for r in rs]


@dataclass(frozen=True)
class Window:
    """Consecutive trace requests: a name, its trace time range and its requests (scaled, from 0)."""

    name: str
    trace_start_s: float
    trace_end_s: float
    requests: list[TraceRequest] = field(repr=False)

    @property
    def ids(self) -> set[str]:
        return {r.request_id for r in self.requests}


def carve_windows(raw: list[TraceRequest], sizes: list[tuple[str, int]], scaling: Scaling) -> list[Window]:
    """Cut ``raw`` (trace order) into consecutive windows of the given (name, request count), each a later,
    disjoint time range of the trace than the one before; a trace too short is refused, naming the window."""
    out, at = [], 0
    for name, n in sizes:
        if n < 2:
            raise ValueError(f"window {name!r} needs at least 2 requests, got {n}")
        part = raw[at:at + n]
        if len(part) < n:
            raise TraceTooShort(f"the trace is too short: window {name!r} needs {n} requests, it has {len(part)} "
                                f"(after the first {at}); use a longer trace, an earlier --start-s or smaller slices")
        out.append(Window(name, part[0].arrival_s, part[-1].arrival_s, scaling.apply(part)))
        at += n
    return out


def at_rate(reqs: list[TraceRequest], rate: float) -> list[TraceRequest]:
    """``reqs`` with their gaps stretched or compressed alike so the mean rate is ``rate`` per second."""
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    if rate <= 0 or span <= 0:
        raise ValueError(f"cannot replay {len(reqs)} requests spanning {span:.3g}s at {rate} requests/s")
    factor = (len(reqs) - 1) / rate / span
    return [TraceRequest(r.request_id, (r.arrival_s - reqs[0].arrival_s) * factor, r.prompt_tokens, r.output_tokens,
                         None, r.tenant, r.priority) for r in reqs]


def going_round(reqs: list[TraceRequest], n: int) -> list[TraceRequest]:
    """The first ``n`` of ``reqs``, going round them again where there are fewer (the k-th time round, a
    request's id gets ``#k``): a sweep run on a short capacity window repeats its lengths rather than stop."""
    if n <= len(reqs):
        return reqs[:n]
    out = list(reqs)
    for i in range(len(reqs), n):
        r = reqs[i % len(reqs)]
        out.append(TraceRequest(f"{r.request_id}#{i // len(reqs) + 1}", r.arrival_s, r.prompt_tokens, r.output_tokens,
                                None, r.tenant, r.priority))
    return out


def count_for(rate: float, duration_s: float) -> int:
    """Requests for a window replayed at ``rate`` per second to last about ``duration_s``."""
    return max(4, int(round(rate * duration_s)) + 1)


def ramp(reqs: list[TraceRequest], rates: list[float], duration_s: float) -> list[TraceRequest]:
    """``reqs`` in consecutive parts, one per rate, each replayed at its rate for about ``duration_s / len(rates)``
    (the last part takes what is left): a calibration run that sees light and heavy batches alike."""
    out: list[TraceRequest] = []
    at, t0 = 0, 0.0
    for i, rate in enumerate(rates):
        n = len(reqs) - at if i == len(rates) - 1 else min(len(reqs) - at, count_for(rate, duration_s / len(rates)))
        part = reqs[at:at + n]
        if len(part) < 2:
            break
        timed = at_rate(part, rate)
        out += [TraceRequest(r.request_id, t0 + r.arrival_s, r.prompt_tokens, r.output_tokens, None, r.tenant,
                             r.priority) for r in timed]
        t0 = out[-1].arrival_s + 1.0 / rate
        at += n
    return out


def poisson_at_rate(reqs: list[TraceRequest], rate: float, seed: int) -> list[TraceRequest]:
    """``reqs`` (their lengths, in order) arriving as a Poisson process of ``rate`` per second: the same
    unit-rate gaps for every rate (seeded), so the rates of a sweep differ by their rate only."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    gaps = np.random.default_rng([seed, 17]).exponential(1.0, len(reqs))
    gaps[0] = 0.0
    times = np.cumsum(gaps) / rate
    return [TraceRequest(r.request_id, float(t), r.prompt_tokens, r.output_tokens, None, r.tenant, r.priority)
            for r, t in zip(reqs, times)]
