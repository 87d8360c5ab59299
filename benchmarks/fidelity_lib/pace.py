"""Pace corrections that only use measurements taken before the run they correct.

The machine's speed drifts (other jobs on a shared host). The protocol may bring the frozen
profile to the machine's pace of the moment, but only from what an operator could know when the
evaluated run starts: a probe (`profiling.Probe`) taken right before it. `PaceLog` keeps every
measurement with the time it was taken and refuses to use one taken at or after the start of
the run being corrected, so the guarantee is checked, not just promised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: How a round's simulated machine pace is chosen: none (the frozen profile as it is), probe (the benchmark's
#: own copy of the model, timed right before the run) or worker-probe (the serving worker itself, timed after
#: its start and before the run's first arrival: `worker_probe`, which this log does not hold).
PACE_CORRECTIONS = ("probe", "worker-probe", "none")


@dataclass(frozen=True)
class Measurement:
    label: str
    taken_s: float  # monotonic clock when the measurement ended
    pace: float  # backend time over the grid profile's for the same shapes


@dataclass
class PaceLog:
    """Every pace measurement, in order; the reference ones were taken right before and after the calibration run."""

    clock: Callable[[], float] = time.monotonic
    measurements: list[Measurement] = field(default_factory=list)
    references: list[Measurement] = field(default_factory=list)

    def record(self, label: str, pace: float, *, reference: bool = False) -> Measurement:
        """A measurement taken now; ``reference``: one around the calibration run (the reference pace
        is their mean - the calibration run's pace, as far as probes tell)."""
        m = Measurement(label, self.clock(), float(pace))
        self.measurements.append(m)
        if reference:
            self.references.append(m)
        return m

    def use_references(self, measurements: list[Measurement]) -> None:
        """Make these (earlier) measurements the reference ones: the probes around the calibration
        run whose profile was frozen, when the calibration was repeated."""
        if any(m not in self.measurements for m in measurements):
            raise ValueError("a reference must be a recorded measurement")
        self.references = list(measurements)

    @property
    def reference(self) -> Measurement | None:
        if not self.references:
            return None
        last = self.references[-1]
        return Measurement("reference", last.taken_s, sum(m.pace for m in self.references) / len(self.references))

    def latest_before(self, start_s: float) -> Measurement:
        """The last measurement taken strictly before ``start_s``."""
        earlier = [m for m in self.measurements if m.taken_s < start_s]
        if not earlier:
            raise ValueError(f"no pace measurement before t={start_s:.3f}")
        return earlier[-1]

    def factor(self, start_s: float, mode: str) -> tuple[float, Measurement | None]:
        """The factor to scale the calibration's backend times by for a run starting at ``start_s``
        (monotonic clock), and the measurement it came from; 1.0 with ``mode`` none or worker-probe (whose
        measurement is the run's own, `worker_probe.pace_factor`)."""
        if mode not in PACE_CORRECTIONS:
            raise ValueError(f"pace correction must be one of {', '.join(PACE_CORRECTIONS)}, got {mode!r}")
        if mode in ("none", "worker-probe"):
            return 1.0, None
        if self.reference is None or self.reference.taken_s >= start_s:
            raise ValueError("no reference pace measured before the calibration run")
        m = self.latest_before(start_s)
        return m.pace / self.reference.pace, m
