"""Repeated calibrations of the same traffic: how far apart they price the worker, and the median one.

A CPU worker's pace drifts from minute to minute, so one calibration run prices the worker at
whatever speed the machine had in that minute. Calibrating the same window of traffic several
times and freezing the *median* profile - the one whose price for a common set of iterations is
the median of the repeats' - keeps one slow or fast minute from setting the prediction, and the
spread of the repeats' prices is the calibration's own repeatability, to be read beside the
live-vs-live noise floor. Each profile stays what `calibrate` wrote (a median of profiles is one
of them: its rows, overhead and hand-off are consistent), so freezing it changes nothing about
how the simulator reads it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.calibration.grid import predict_row

__all__ = ["RepeatSpread", "profile_price_s", "repeat_spread"]


def profile_price_s(profile: str | Path, rows: Sequence[Mapping[str, Any]]) -> float:
    """What ``profile``'s measured model charges for ``rows`` (iteration shapes), in seconds, summed."""
    from sim.latency.measured import MeasuredProfileModel

    model = MeasuredProfileModel.from_file(profile)
    return sum(predict_row(model, r) for r in rows)


@dataclass(frozen=True)
class RepeatSpread:
    """The repeats' prices for the same iterations and which repeat is the median."""

    prices_s: tuple[float, ...]  # per repeat, the summed price of the reference iterations
    iterations: int  # how many reference iterations were priced

    @property
    def median_index(self) -> int:
        """The repeat whose price is the median (the lower middle one for an even count)."""
        order = sorted(range(len(self.prices_s)), key=lambda i: (self.prices_s[i], i))
        return order[(len(order) - 1) // 2]

    @property
    def spread_pct(self) -> float:
        """(max - min) / mean of the prices, in %: 0 for a single repeat."""
        if len(self.prices_s) < 2:
            return 0.0
        return 100.0 * (max(self.prices_s) - min(self.prices_s)) / statistics.fmean(self.prices_s)

    def relative_to_median(self) -> list[float]:
        """Each repeat's price over the median repeat's, minus 1, in %."""
        mid = self.prices_s[self.median_index]
        return [100.0 * (p / mid - 1) for p in self.prices_s]

    def mean_iteration_ms(self) -> list[float]:
        return [1e3 * p / max(1, self.iterations) for p in self.prices_s]


def repeat_spread(profiles: Sequence[str | Path], rows: Sequence[Mapping[str, Any]]) -> RepeatSpread:
    """Price the same iterations (``rows``: e.g. every repeat's live iterations) on each profile."""
    if not profiles:
        raise ValueError("no calibrated profiles to compare")
    if not rows:
        raise ValueError("no iterations to price the profiles on")
    return RepeatSpread(tuple(profile_price_s(p, rows) for p in profiles), len(rows))
