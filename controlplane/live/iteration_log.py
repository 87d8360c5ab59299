"""Where a live run's iteration samples come from: its events in memory, or its recorded ``iteration`` table.

The live driver feeds an `IterationTimed` event into the core for every worker step with work;
the core passes it to every ``cp_on_event`` observer. `IterationLog` is such an observer (give
it to the driver as an extra plugin) and keeps the samples in memory. With
``storage.record_iterations`` on, the SQL recorder stores the same events in the ``iteration``
table, and `read_live_run` reads them back (what ``controlplane calibrate RUN_ID`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.events import IterationTimed
from controlplane.hardware.profile_format import PADDED_FIELDS, ROW_FIELDS
from controlplane.hookspecs import hookimpl
from controlplane.live.iteration_samples import IterationSample

__all__ = ["IterationLog", "LiveRunIterations", "read_live_run", "run_iterations", "worker_meta"]


class IterationLog:
    """Observer plugin: every `IterationTimed` of the run, in arrival order, as an `IterationSample`."""

    name = "iteration-log"

    def __init__(self) -> None:
        self.samples: list[IterationSample] = []

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is IterationTimed:
            self.samples.append(IterationSample.from_event(event))

    def clear(self) -> None:
        """Forget what was seen so far (e.g. a warm-up's iterations)."""
        self.samples.clear()


def run_iterations(engine: Any, run_id: int, worker: str | None = None) -> list[IterationSample]:
    """The iterations a live run recorded (its ``iteration`` table), oldest first; one worker's with ``worker``."""
    from controlplane.storage.queries import iteration_rows

    found = []
    for r in iteration_rows(engine, run_id, worker):
        row = {k: r[k] for k in (*ROW_FIELDS, *PADDED_FIELDS) if r.get(k) is not None}
        found.append(IterationSample(r["worker_id"], int(r["batch_id"]), float(r["start_s"]), float(r["end_s"]), row))
    return found


def worker_meta(engine: Any, run_id: int) -> dict[str, Any]:
    """Model, device and precision of a run's first ready worker (its reported facts)."""
    from controlplane.storage import iter_rows

    for e in iter_rows(engine, run_id, "worker_events"):
        if e["kind"] == "ready" and e.get("detail"):
            d = e["detail"]
            return {k: d[k] for k in ("model", "device", "precision", "device_name") if d.get(k) is not None}
    return {}


@dataclass(frozen=True)
class LiveRunIterations:
    """A recorded live run's iterations and what its worker reported about itself."""

    run_id: int
    samples: list[IterationSample]
    meta: dict[str, Any] = field(default_factory=dict)  # model, device, precision, device_name


def read_live_run(engine: Any, run_id: int, worker: str | None = None) -> LiveRunIterations:
    """A recorded live run's timed iterations; a `ValueError` that says why for a run that has none."""
    from controlplane.storage import get_run

    run = get_run(engine, run_id)
    if run["mode"] != "live":
        where = engine.url.render_as_string(hide_password=True)
        raise ValueError(f"run {run_id} in {where} is a {run['mode']} run; calibrate needs a live run: "
                         "`controlplane live-replay` stores one and prints its id and database (give that "
                         "database with --db)")
    samples = run_iterations(engine, run_id, worker)
    if not samples and worker and (others := sorted({s.worker_id for s in run_iterations(engine, run_id, None)})):
        raise ValueError(f"run {run_id} has no worker {worker!r}; its iterations are of {', '.join(others)}")
    if not samples:
        of = f" of worker {worker}" if worker else ""
        raise ValueError(f"run {run_id} recorded no iteration timings{of}: record them with "
                         "storage.record_iterations: true in the run's config (`controlplane live-replay` and "
                         "benchmarks/fidelity.py do)")
    return LiveRunIterations(run_id, samples, worker_meta(engine, run_id))
