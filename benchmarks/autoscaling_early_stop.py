"""Stop a static replay as soon as it cannot reach `--target`, for benchmarks/autoscaling.py.

The static search (`static_search`) and `--find-scale` replay fixed counts to find the fewest that
meet the SLO; every count below it is a whole replay whose only use is the answer "misses": on a long
trace, much of the benchmark's time. A replay of ``N`` requests whose finished
requests already hold more misses than the target allows (``round((N - misses) / N, 4) < target``,
the attainment rounded as the benchmark rounds it) misses the target whatever the rest does, so it
stops there: the answer is the one the whole replay would give, exactly. Measured (whole processes, this
2-core host, 2026-12-05): the default `python benchmarks/autoscaling.py` 13.6 s -> 8.7 s (median of 3 pairs, the
same JSON line); `--find-scale 6` on a 6-hour, 26,408-request stand-in 226 s -> 139 s (one run each, the same
answer after the same nine replays).

`MissCounter` (an observer plugin) counts finished requests that miss the TTFT, TPOT or end-to-end target (or
did not complete: the same rule as the benchmark's `meets_slo`, which every request the run's own
attainment counts as attained also meets); `StopWhenMissed` wraps the replay's progress callback
and raises `TargetMissed` once the count passes the allowance. A stopped replay's row says so
(`stopped_early`, the attainment it could at most have reached, the simulated time it stopped at)
instead of a full replay's numbers; `--no-early-stop` replays every count to the end.
"""

from __future__ import annotations

import math
from typing import Callable

from controlplane import hookimpl
from controlplane.events import RequestFinished

__all__ = ["MissCounter", "StopWhenMissed", "TargetMissed", "allowed_misses", "stopped_row"]


class TargetMissed(Exception):
    """A replay stopped: its misses so far already keep it below the target."""

    def __init__(self, misses: int, allowed: int, num_requests: int, arrived: int, sim_s: float) -> None:
        super().__init__(f"{misses} misses of {num_requests} requests > {allowed} allowed "
                         f"(after {arrived} arrivals, simulated {sim_s:.0f} s)")
        self.misses, self.allowed, self.num_requests = misses, allowed, num_requests
        self.arrived, self.sim_s = arrived, sim_s


def allowed_misses(num_requests: int, target: float) -> int:
    """The most misses at which ``num_requests`` requests can still reach ``target`` as the benchmark
    compares it (the attainment rounded to 4 digits); -1 when none can (a target above 1); 0 for no requests
    (the replay then says that no request was replayed)."""
    n = num_requests
    if n <= 0:
        return 0
    m = max(-1, min(n, math.floor((1.0 - target) * n)))
    while m + 1 <= n and round((n - m - 1) / n, 4) >= target:
        m += 1
    while m >= 0 and round((n - m) / n, 4) < target:
        m -= 1
    return m


class MissCounter:
    """Counts finished requests that did not complete within the SLO (the benchmark's `meets_slo`)."""

    name = "miss-counter"

    def __init__(self, meets: Callable[[object], bool]) -> None:
        self.meets = meets
        self.misses = 0

    @hookimpl
    def cp_on_event(self, event):
        if type(event) is RequestFinished and not self.meets(event.request):
            self.misses += 1


class StopWhenMissed:
    """A replay's ``on_progress(arrived, sim_s)`` that calls ``inner`` (if any), then raises `TargetMissed`
    once ``counter`` holds more than ``allowed`` misses (checked every 256 arrivals and every tick of the
    drain, as the replay calls it)."""

    __slots__ = ("counter", "allowed", "num_requests", "inner")

    def __init__(self, counter: MissCounter, allowed: int, num_requests: int,
                 inner: Callable[[int, float], None] | None = None) -> None:
        self.counter, self.allowed, self.num_requests, self.inner = counter, allowed, num_requests, inner

    def __call__(self, arrived: int, sim_s: float) -> None:
        if self.inner is not None:
            self.inner(arrived, sim_s)
        if self.counter.misses > self.allowed:
            raise TargetMissed(self.counter.misses, self.allowed, self.num_requests, arrived, sim_s)


def stopped_row(stop: TargetMissed, wall_s: float) -> dict:
    """A stopped replay's row: no attainment, GPU-hours or latencies (the run did not end), but the most
    attainment it could have reached and where it stopped."""
    n = stop.num_requests
    return {"stopped_early": True, "slo_attainment": None,
            "slo_attainment_at_most": round((n - stop.misses) / n, 4) if n else None,
            "misses_when_stopped": stop.misses, "misses_allowed": stop.allowed, "num_requests": n,
            "arrived_when_stopped": stop.arrived, "stopped_at_sim_s": round(stop.sim_s, 1),
            "wall_s": round(wall_s, 1)}


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_early_stop.py", "autoscaling.py [--no-early-stop ...]"))
