"""Capacity: the highest request rate a worker sustains within the SLO, live and simulated.

The SLO is a percentile bound on one latency (`Slo`: by default E2E p90 within 4x what the
frozen simulator gives the same requests alone - TTFT stays low under prefill-first batching long
after decodes have slowed to a crawl, so E2E is what saturation shows in). One window of trace
requests is replayed at a short sweep of rates (its gaps compressed alike, `slices.at_rate`),
live and in the simulator; on each side the capacity is where the SLO metric crosses the bound,
interpolated between the two sweep rates around the crossing (linear in log latency). The same
estimator on both sides, so its own bias cancels in the error. `bisect_capacity` finds the
simulator's capacity finely (it costs seconds), which places the sweep.
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
