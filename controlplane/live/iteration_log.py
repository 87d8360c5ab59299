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

__all__ = ["IterationLog", "LiveRunIterations", "read_live_run", "run_iterations", "worker_meta", "workers_meta"]


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


#: What a worker reported about itself that a profile is labelled with (`sim.calibration.WORKER_LABELS`).
META_KEYS = ("model", "device", "precision", "compiled", "device_name")


def workers_meta(engine: Any, run_id: int, keys: tuple[str, ...] = META_KEYS) -> dict[str, dict[str, Any]]:
    """Model, device and precision (``keys`` of its facts) each worker of a run reported when it was first ready, by
    worker id."""
    from controlplane.storage import iter_rows

    found: dict[str, dict[str, Any]] = {}
    for e in iter_rows(engine, run_id, "worker_events"):
        if e["kind"] == "ready" and e.get("detail") and e["worker_id"] not in found:
            d = e["detail"]
            found[e["worker_id"]] = {k: d[k] for k in keys if d.get(k) is not None}
    return found


def worker_meta(engine: Any, run_id: int, worker: str | None = None) -> dict[str, Any]:
    """Model, device and precision of ``worker`` (its reported facts); without one, of the run's first ready worker."""
    every = workers_meta(engine, run_id)
    if worker is not None:
        return every.get(worker, {})
    return next(iter(every.values()), {})


def _kind(meta: dict[str, Any]) -> tuple:
    """What one profile may stand for: the model, precision, compiled or not and device type (``cuda:0`` and
    ``cuda:1`` alike)."""
    device = meta.get("device")
    return (meta.get("model"), meta.get("precision"), meta.get("compiled"),
            device.split(":")[0] if isinstance(device, str) else device, meta.get("device_name"))


def _describe(meta: dict[str, Any]) -> str:
    words = [str(meta[k]) for k in ("model", "precision", "device") if meta.get(k) is not None]
    return " ".join(words + (["compiled"] if meta.get("compiled") else [])) or "unknown"


def one_kind_of_worker(run_id: int, samples: list[IterationSample], every: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The labels of the workers whose iterations ``samples`` are; a `ValueError` naming them if they are of
    different models, precisions or devices (one profile cannot stand for them: calibrate one with ``--worker``)."""
    timed = sorted({s.worker_id for s in samples})
    kinds: dict[tuple, list[str]] = {}
    for w in timed:
        kinds.setdefault(_kind(every.get(w, {})), []).append(w)
    if len(kinds) > 1:
        listed = "; ".join(f"{', '.join(ws)} ({_describe(every.get(ws[0], {}))})" for ws in kinds.values())
        raise ValueError(f"run {run_id} served several kinds of worker, and one profile is of one: {listed}; "
                         f"calibrate one of them with --worker (e.g. --worker {timed[0]})")
    return every.get(timed[0], {}) if timed else {}


@dataclass(frozen=True)
class LiveRunIterations:
    """A recorded live run's iterations and what its worker reported about itself."""

    run_id: int
    samples: list[IterationSample]
    meta: dict[str, Any] = field(default_factory=dict)  # model, device, precision, device_name
    from_s: float | None = None  # the iterations that started before this run time were left out
    left_out: int = 0  # how many


def read_live_run(engine: Any, run_id: int, worker: str | None = None, *,
                  from_s: float | None = None) -> LiveRunIterations:
    """A recorded live run's timed iterations (of ``worker``, or of every worker; those that started at or after
    ``from_s``, by default the run's recorded ``warm_up_until_s``: a warm-up served before the traffic left out;
    ``from_s=0`` keeps them) and the labels of the worker
    that timed them; a `ValueError` that says why for a run that has none, and for a run whose workers are of
    several models, precisions or devices without ``worker`` (`one_kind_of_worker`)."""
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
    if from_s is None:  # (a benchmark's warm-up before its traffic: `warm_up_until_s` in the run's summary)
        from_s = (run.get("summary") or {}).get("warm_up_until_s")
    left_out = 0
    if from_s:
        later = [s for s in samples if s.start_s >= from_s]
        if not later:
            raise ValueError(f"run {run_id} has no iteration from {from_s:g} s on: its {len(samples)} iterations "
                             f"started at {samples[0].start_s:.3f}-{max(s.start_s for s in samples):.3f} s")
        samples, left_out = later, len(samples) - len(later)
    return LiveRunIterations(run_id, samples, one_kind_of_worker(run_id, samples, workers_meta(engine, run_id)),
                             from_s or None, left_out)
