"""Repeated calibrations of the same traffic: how far apart they price the worker, and the median one.

A CPU worker's pace drifts from minute to minute, so one calibration run prices the worker at
whatever speed the machine had in that minute. Calibrating the same window of traffic several
times and freezing the *median* profile - the one whose price for a common set of iterations is
the median of the repeats' (for an even count, which has no middle one, the *upper* median: the dearer
of the two middle repeats, so a tie between a slow and a fast minute errs towards predicting the
worker slower, capacity lower, never faster) - keeps one slow or fast minute from setting the prediction, and the
spread of the repeats' prices is the calibration's own repeatability, to be read beside the
live-vs-live noise floor. Each profile stays what `calibrate` wrote (a median of profiles is one
of them: its rows, overhead and hand-off are consistent), so freezing it changes nothing about
how the simulator reads it.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.live.iteration_samples import IterationSample
from sim.calibration.grid import predict_row
from sim.calibration.workflow import CalibratedProfile, calibrate

__all__ = ["SINGLE_REPEAT_NOTE", "RepeatSpread", "RepeatedCalibration", "calibrate_repeats", "profile_price_s",
           "repeat_spread"]

#: Why a single calibration has no spread: its repeatability was not measured (not: it is perfectly repeatable).
SINGLE_REPEAT_NOTE = "one calibration: no repeats to spread, its repeatability not measured"


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
        """The repeat whose price is the median; for an even count the upper median, the dearer of the two
        middle ones (`median_label`): a prediction frozen on it errs slow rather than fast."""
        order = sorted(range(len(self.prices_s)), key=lambda i: (self.prices_s[i], i))
        return order[len(order) // 2]

    @property
    def median_label(self) -> str:
        """What the frozen repeat is: ``median`` (an odd count), ``upper median`` (an even one)."""
        return "median" if len(self.prices_s) % 2 else "upper median"

    @property
    def spread_pct(self) -> float | None:
        """(max - min) / mean of the prices, in %; None for a single repeat (nothing to spread: not known,
        not 0 - `SINGLE_REPEAT_NOTE` says why)."""
        if len(self.prices_s) < 2:
            return None
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


@dataclass(frozen=True)
class RepeatedCalibration:
    """Every repeat's calibrated profile, how far apart they price the worker, and which is frozen."""

    fits: tuple[CalibratedProfile, ...]  # one per repeat, each in its own file
    spread: RepeatSpread  # every repeat's iterations priced on each profile
    path: Path  # the median repeat's profile, copied to the output

    @property
    def median(self) -> CalibratedProfile:
        return self.fits[self.spread.median_index]


def repeat_path(output: str | Path, k: int) -> Path:
    """Where repeat ``k`` (from 1) of a calibration written to ``output`` is kept: ``NAME.repeat-K.json``."""
    out = Path(output)
    return out.with_name(f"{out.stem}.repeat-{k}{out.suffix or '.json'}")


def calibrate_repeats(repeats: Sequence[Sequence[IterationSample]], output: str | Path, *,
                      run_ids: Sequence[Sequence[int | None]] = (), **options: Any) -> RepeatedCalibration:
    """Calibrate each repeat of the same traffic (``repeats``: one live run's samples, or several put on
    one timeline with `join_runs`) into a profile of its own (`repeat_path`), price every repeat's
    iterations on each (`repeat_spread`), and copy the median one (the upper median of an even count) to
    ``output``: the profile to freeze.
    ``options`` go to `calibrate` (``grid``, ``timing``, ``pace``, ``meta``) for every repeat alike."""
    if not repeats:
        raise ValueError("no repeats to calibrate")
    ids = list(run_ids) or [()] * len(repeats)
    if len(ids) != len(repeats):
        raise ValueError(f"{len(repeats)} repeats but {len(ids)} lists of run ids")
    fits = tuple(calibrate(samples, repeat_path(output, k + 1), run_ids=list(r), **options)
                 for k, (samples, r) in enumerate(zip(repeats, ids)))
    spread = repeat_spread([f.path for f in fits], [s.row for f in fits for s in f.samples])
    path = Path(shutil.copyfile(fits[spread.median_index].path, output))
    return RepeatedCalibration(fits, spread, path)
