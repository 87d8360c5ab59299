"""Calibrate the simulator's measured latency model on live runs (see docs/calibration.md).

`calibrate` is the workflow (``controlplane calibrate`` and ``benchmarks/fidelity.py`` run it);
`sim.calibration.grid` compares the live backend with a grid profile; `sim.calibration.repeats`
calibrates repeats of the same traffic and prices them against each other (their spread, the
median one - the upper median of an even count - which is frozen). The samples and their arithmetic are in
`controlplane.live.iteration_samples` and `controlplane.live.calibration`.
"""

from sim.calibration.grid import BUSY_BINS, grid_model, live_slowdown, live_slowdowns, pace_by_busy, predict_row
from sim.calibration.repeats import SINGLE_REPEAT_NOTE, RepeatedCalibration, RepeatSpread, calibrate_repeats, profile_price_s, repeat_spread
from sim.calibration.workflow import TIMINGS, CalibratedProfile, calibrate, calibrate_rows

__all__ = ["BUSY_BINS", "SINGLE_REPEAT_NOTE", "TIMINGS", "CalibratedProfile", "RepeatSpread", "RepeatedCalibration", "calibrate",
           "calibrate_repeats", "calibrate_rows", "grid_model", "live_slowdown", "live_slowdowns", "pace_by_busy", "predict_row", "profile_price_s", "repeat_spread"]
