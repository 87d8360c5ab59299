"""Capacity: the highest request rate a worker sustains within the SLO, live and simulated.

The SLO is a percentile bound on one latency (`Slo`: by default E2E p90 within 4x what the
frozen simulator gives the same requests alone - TTFT stays low under prefill-first batching long
after decodes have slowed to a crawl, so E2E is what saturation shows in). One window of trace
requests is replayed at a short sweep of rates (its gaps compressed alike, `slices.at_rate`),
live and in the simulator; on each side the capacity is where the SLO metric crosses the bound,
interpolated between the two sweep rates around the crossing (linear in log latency). The same
estimator on both sides, so its own bias cancels in the error. `bisect_capacity` finds the
simulator's capacity finely (it costs seconds), which places the sweep.

The sweep is adaptive (`next_sweep_rate`): the planned fractions of the simulated capacity first,
then, while the live side has not crossed the bound ('above': within it at every swept rate), one
more rate `EXTEND_STEP` x the simulated capacity above the highest (the planned fractions' own
spacing, so the interpolation has the same resolution past them), until the live side crosses or
the cap (``max_fraction`` x the simulated capacity, or the most the capacity window's requests can
feed for the run's length: `window_max_rate`) has been swept; likewise downwards, to ``min_fraction``,
while the live side is over the bound at every rate ('below'). The capacity window is sized for the
cap (`capacity_window_requests`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class Slo:
    metric: str  # ttft | tpot | e2e
    pct: int
    bound_s: float

    def value(self, times: Sequence[Any], expected: int) -> float:
        """The SLO metric over ``times`` (`replay.RequestTimes`); infinite when requests did not complete."""
        from fidelity_lib.metrics import stats

        done = [t for t in times if t.status == "completed"]
        return stats(done)[self.metric][self.pct] if len(done) == expected else math.inf

    def __str__(self) -> str:
        return f"{self.metric.upper()} p{self.pct} <= {self.bound_s * 1e3:.0f} ms"


#: The sweep's rates, as fractions of the simulator's capacity estimate made before any live sweep run.
SWEEP_FRACTIONS = (0.7, 0.85, 1.0, 1.15, 1.3)
#: Rates the adaptive sweep adds step by this fraction of the simulated capacity (the planned fractions' spacing).
EXTEND_STEP = 0.15
#: The adaptive sweep goes no higher than this many times the simulated capacity ...
MAX_FRACTION = 2.5
#: ... and no lower than this many times it.
MIN_FRACTION = 0.25
#: Relative slack under which a rate counts as the cap already swept.
_AT_CAP = 1e-6


@dataclass(frozen=True)
class Crossing:
    rate: float  # requests/s; a bound when ``status`` is not "within"
    status: str  # within: crossed inside the sweep; below: over the SLO at every rate; above: within at every rate

    def as_dict(self) -> dict[str, float | str]:
        return {"rate": round(self.rate, 4), "status": self.status}


def crossing_rate(rates: Sequence[float], values: Sequence[float], slo: float) -> Crossing:
    """Where ``values`` (the SLO metric at each rate) first goes over ``slo``, interpolated in log latency."""
    if len(rates) != len(values) or not rates:
        raise ValueError("one SLO value per sweep rate, at least one")
    pts = sorted(zip(rates, values))
    for i, (r, v) in enumerate(pts):
        if not (math.isfinite(v) and v <= slo):
            if i == 0:
                return Crossing(r, "below")
            r0, lo = pts[i - 1][0], math.log(max(pts[i - 1][1], 1e-9))
            if not math.isfinite(v):
                return Crossing(r0, "within")
            hi = math.log(max(v, 1e-9))
            frac = (math.log(slo) - lo) / (hi - lo) if hi > lo else 0.0
            return Crossing(r0 + frac * (r - r0), "within")
    return Crossing(pts[-1][0], "above")


def bisect_capacity(slo_metric_at: Callable[[float], float], slo: float, *, low: float, high: float,
                    steps: int = 8) -> float:
    """The highest rate in [low, high] whose SLO metric is within ``slo`` (bisection; monotone assumed).
    ``high`` doubles (up to 6 times) while it is still within the SLO."""
    for _ in range(6):
        if slo_metric_at(high) > slo:
            break
        low, high = high, high * 2
    for _ in range(steps):
        mid = math.sqrt(low * high)
        if slo_metric_at(mid) <= slo:
            low = mid
        else:
            high = mid
    return low


def next_sweep_rate(rates: Sequence[float], live_values: Sequence[float], slo: float, *, sim_capacity: float,
                    step: float = EXTEND_STEP, max_fraction: float = MAX_FRACTION, min_fraction: float = MIN_FRACTION,
                    max_rate: float = math.inf) -> float | None:
    """The rate the adaptive sweep runs next, or None when it is done.

    Done when the live side crosses ``slo`` inside the swept ``rates`` (`crossing_rate` 'within'), or
    when the cap in its direction has been swept already. While the live side is within the SLO at
    every rate ('above'): the highest rate + ``step`` x ``sim_capacity``, clipped to the cap, the lower
    of ``max_fraction`` x ``sim_capacity`` and ``max_rate`` (what the capacity window can feed). While
    it is over the SLO at every rate ('below'): the lowest - ``step`` x ``sim_capacity``, clipped to
    ``min_fraction`` x ``sim_capacity``."""
    if sim_capacity <= 0 or step <= 0:
        raise ValueError(f"sim_capacity and step must be positive, got {sim_capacity}, {step}")
    if not 0 < min_fraction < max_fraction:
        raise ValueError(f"expected 0 < min_fraction < max_fraction, got {min_fraction}, {max_fraction}")
    status = crossing_rate(rates, live_values, slo).status
    if status == "above":
        top, cap = max(rates), min(max_fraction * sim_capacity, max_rate)
        return None if top >= cap * (1 - _AT_CAP) else min(top + step * sim_capacity, cap)
    if status == "below":
        bottom, floor = min(rates), min_fraction * sim_capacity
        return None if bottom <= floor * (1 + _AT_CAP) else max(bottom - step * sim_capacity, floor)
    return None


def planned_rates(fractions: Sequence[float], sim_capacity: float, cap: float) -> list[float]:
    """The sweep's planned rates: ``fractions`` of ``sim_capacity``, each clipped to the sweep's ``cap`` (a rate above
    it would go past what the sweep says it swept, and past what the capacity window feeds: its requests would
    repeat), in order, a rate clipped twice run once."""
    return list(dict.fromkeys(min(f * sim_capacity, cap) for f in fractions))


def capacity_window_requests(reference_rate: float, duration_s: float, fractions: Sequence[float],
                             max_fraction: float = MAX_FRACTION) -> int:
    """Requests the capacity window needs so that a sweep run at the highest rate the adaptive sweep may reach
    (the larger of the planned fractions' top and ``max_fraction``, times ``reference_rate``, an upper bound
    of the simulated capacity) lasts ``duration_s``."""
    from fidelity_lib.slices import count_for

    return count_for(max(max(fractions), max_fraction) * reference_rate, duration_s)


def capacity_window_size(need: int, left: int, min_requests: int) -> tuple[int, bool]:
    """(requests the capacity window takes, whether its sweep runs go round them): ``need`` when the trace
    has that many ``left`` after the slices; else, when at least ``min_requests`` are left, all of them, the
    runs going round them again (`slices.going_round`: a worker faster than the trace is long, say on a GPU,
    repeats the window's lengths rather than stop the protocol); else ``need`` (the window refuses a trace
    too short for it, naming it)."""
    if left >= need or left < min_requests:
        return need, False
    return left, True


def window_max_rate(requests: int, duration_s: float) -> float:
    """The highest rate at which ``requests`` still fill a sweep run of ``duration_s`` (`count_for` inverted)."""
    return max(requests - 1, 1) / duration_s
