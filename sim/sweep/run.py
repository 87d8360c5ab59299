"""`run_sweep`: every point of a spec, once per seed, on a backend, stored under one sweep id."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from controlplane.errors import ConfigError
from controlplane.storage import ensure_schema, make_engine
from controlplane.storage.crashed import mark_crashed_quietly
from sim.interrupts import sigterm_stops
from sim.replay import TraceTransforms, prepared_trace, rows_left_out, trace_read
from sim.sweep.backends import BACKENDS, Backend, PoolBackend, backend_name, check_ray_address, make_backend
from sim.sweep.interrupt import interrupt_deferred, interrupts_held_while_stopping
from sim.sweep.lock import SweepLock
from sim.sweep.main_guard import check_main_guard
from sim.sweep.messages import said_once, say_repeats
from sim.sweep.spec import LoadedSpec, Point
from sim.sweep.spec_trace import point_trace, trace_overrides
from sim.sweep.store import create_or_resume, finish_sweep, last_end, store_outcome, stored_keys, sweep_runs
from sim.sweep.worker import RunOutcome, RunTask
from sim.traces import TraceRequest

__all__ = ["SweepInterrupted", "SweepResult", "load_traces", "make_tasks", "point_trace_id", "read_task_traces",
           "run_sweep", "transforms_of"]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``interrupted_by`` says which, `sim.interrupts.sigterm_stops`) during a sweep: it is
    stored as ``interrupted`` with ``stored`` of its ``total`` runs finished; the same spec against the same database
    resumes it."""

    def __init__(self, sweep_id: int, stored: int, total: int) -> None:
        super().__init__(sweep_id, stored, total)
        self.sweep_id, self.stored, self.total = sweep_id, stored, total


@dataclass
class SweepResult:
    """What `run_sweep` did; `runs` reads the sweep's runs back, with their summaries (what `sim sweep --json`
    prints)."""

    sweep_id: int
    resumed: bool
    total: int  # runs in the sweep
    skipped: int  # already stored (a resumed sweep)
    ran: int
    run_ids: dict[str, int] = field(default_factory=dict)  # point key -> run id, of the runs done now
    failed: dict[str, str] = field(default_factory=dict)  # point key -> error, of runs that raised (done again on resume)
    backend: str = "serial"
    db_url: str | None = None  # the database the sweep is stored in

    def runs(self, engine: Engine | None = None) -> list[dict[str, Any]]:
        """Every run the sweep has stored (those of earlier attempts of a resumed one too), in run id order: dicts
        with ``id``, ``sweep_key``, ``seed``, ``config``, ``summary``, ``status`` and ``overrides`` (the point's
        dotted keys), read from ``engine``, else from `db_url`."""
        own = engine is None
        engine = engine if engine is not None else make_engine(self.db_url)
        try:
            return sweep_runs(engine, self.sweep_id)
        finally:
            if own:
                engine.dispose()


def transforms_of(loaded: LoadedSpec, *, limit: int | None = None) -> TraceTransforms:
    """The transforms the spec's trace section sets (``limit`` replacing the spec's)."""
    return loaded.spec.trace.transforms(limit=limit)


def spec_trace_read(loaded: LoadedSpec) -> dict[str, Any] | None:
    """How the spec reads its trace (its transforms and format options), as a run row stores it
    (``config["trace_read"]``, `sim.replay.trace_read`): what `controlplane runs show` prints."""
    return trace_read(transforms_of(loaded), loaded.spec.trace.options or None)


def load_traces(loaded: LoadedSpec, seeds: Iterable[int], transforms: TraceTransforms | None = None,
                trace_path: str | None = None, trace_format: str | None = None) -> dict[str, list[TraceRequest]]:
    """The requests each seed's runs replay, read once per seed (the reader and the transforms
    draw from the seed's streams, exactly as ``replay`` would)."""
    return read_traces(loaded, seeds, transforms, trace_path, trace_format)[0]


def read_traces(loaded: LoadedSpec, seeds: Iterable[int], transforms: TraceTransforms | None = None,
                trace_path: str | None = None, trace_format: str | None = None
                ) -> tuple[dict[str, list[TraceRequest]], dict[str, dict[str, Any]]]:
    """`load_traces`' requests, and by trace id what each read's format options left out of the file
    (`sim.replay.rows_left_out`, empty when nothing): what each run's summary stores, as a replay's does."""
    transforms = transforms or transforms_of(loaded)
    path = trace_path or loaded.trace_path()
    fmt = trace_format if trace_format is not None else loaded.trace_format()
    out: dict[str, list[TraceRequest]] = {}
    left_out: dict[str, dict[str, Any]] = {}
    for seed in sorted(set(seeds)):
        reader, requests = prepared_trace(path, seed=seed, transforms=transforms, trace_format=fmt,
                                          trace_options=loaded.spec.trace.options or None)
        out[trace_id(seed)] = list(requests)
        left_out[trace_id(seed)] = rows_left_out(reader)
    return out, left_out


def read_task_traces(loaded: LoadedSpec, tasks: Iterable[RunTask], trace_path: str | None = None,
                     trace_format: str | None = None) -> tuple[dict[str, list[TraceRequest]], dict[str, dict[str, Any]]]:
    """`read_traces` for a sweep's tasks: each trace they replay read once, by its id (`point_trace_id`): a
    seed's, and the point's swept trace transforms (``trace.rate_scale``: `sim.sweep.spec_trace`) if any."""
    out: dict[str, list[TraceRequest]] = {}
    left_out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task.trace_id in out:
            continue
        transforms = point_trace(loaded.spec.trace, task.overrides).transforms()
        requests, dropped = read_traces(loaded, [task.seed], transforms, trace_path, trace_format)
        out[task.trace_id], left_out[task.trace_id] = requests[trace_id(task.seed)], dropped[trace_id(task.seed)]
    return out, left_out


def with_rows_left_out(tasks: Iterable[RunTask], left_out: dict[str, dict[str, Any]]) -> list[RunTask]:
    """``tasks``, each given what its trace's read left out (`read_traces`); a task replaying only the
    first ``limit`` requests is left as it is (the count is the whole read's)."""
    return [replace(t, rows_left_out=left_out.get(t.trace_id) or {}) if t.limit is None else t for t in tasks]


def trace_id(seed: int, stage: str | None = None) -> str:
    return f"seed={seed}" if stage is None else f"{stage}:seed={seed}"


def point_trace_id(seed: int, overrides: dict[str, Any]) -> str:
    """The id of the trace a sweep's point replays under ``seed``: the seed's (`trace_id`), and its swept
    trace transforms when it has some (``seed=0 {"rate_scale": 3}``)."""
    values = trace_overrides(overrides)
    return trace_id(seed) + (f" {json.dumps(values, sort_keys=True, default=str)}" if values else "")


def make_tasks(loaded: LoadedSpec, points: Iterable[Point], db_url: str | None, *,
               record: str | None = None, trace_path: str | None = None,
               trace_format: str | None = None) -> list[RunTask]:
    """Each point's task, its config validated now (a bad value fails before anything runs)."""
    name = loaded.name
    path = trace_path or loaded.trace_path()
    fmt = trace_format if trace_format is not None else loaded.trace_format()
    options = loaded.spec.trace.options or None
    tasks = []
    for p in points:
        try:
            config = loaded.run_config(p.overrides, p.seed, db_url=db_url, name=f"{name} #{p.index} seed {p.seed}")
        except ConfigError as exc:  # (a point load_spec did not try: named with the spec, as the ones it did)
            raise ConfigError(f"{loaded.path or 'sweep spec'}: {exc}") from None
        tasks.append(RunTask(key=p.key, index=p.index, seed=p.seed, overrides=p.overrides, config=config,
                             trace_id=point_trace_id(p.seed, p.overrides), trace_name=path, trace_format=fmt,
                             record=record or loaded.spec.record,
                             trace_read=trace_read(point_trace(loaded.spec.trace, p.overrides).transforms(), options)))
    return tasks


@sigterm_stops  # (SIGTERM stops it as Ctrl-C does)
def run_sweep(
    loaded: LoadedSpec,
    db_url: str,
    *,
    backend: str | Backend = "auto",
    workers: int | None = None,
    ray_address: str | None = None,
    fresh: bool = False,
    trace_path: str | None = None,
    trace_format: str | None = None,
    on_start: Callable[[int, int, str], None] | None = None,
    on_run: Callable[[RunOutcome, int], None] | None = None,
    engine: Engine | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; ``on_start(total, already_stored, backend)`` then
    ``on_run(outcome, run_id)`` after each run is stored."""
    if not isinstance(backend, Backend) and backend not in BACKENDS:  # (refused before a sweep row is stored)
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "pool" or isinstance(backend, PoolBackend) or (
            backend == "auto" and not ray_address and importlib.util.find_spec("ray") is None):
        check_main_guard()  # (a script without `if __name__ == "__main__":`: refused before the database is touched)
    if not Path(trace_path or loaded.trace_path()).is_file():  # (refused before the database is touched)
        where = "--trace" if trace_path else f"{loaded.path or 'sweep spec'}: trace.path"
        raise ConfigError(f"{where}: trace file not found: {trace_path or loaded.trace_path()}")
    if ray_address and backend in ("auto", "ray"):
        check_ray_address(ray_address)  # (no cluster there: refused before a sweep row is stored)
    tasks = make_tasks(loaded, loaded.points(), db_url, trace_path=trace_path, trace_format=trace_format)
    # every trace the runs replay, read before the sweep is stored: a bad row is refused as a bad spec is (it
    # stored a failed sweep of no run); a resume reads those of its stored runs too
    all_traces, all_left_out = read_task_traces(loaded, tasks, trace_path=trace_path, trace_format=trace_format)
    own_engine = engine is None  # (after every point's config is checked: a bad one touches no database)
    engine = engine or make_engine(db_url)
    ensure_schema(engine)
    mark_crashed_quietly(engine)  # runs of a sweep (or replay) killed earlier (controlplane.storage.crashed)
    trace = trace_path or loaded.trace_path()
    spec_hash = loaded.run_hash(trace, trace_format)
    lock = SweepLock(engine)  # (held until the sweep ends: nobody else resumes it meanwhile)
    ended = None if fresh else last_end(engine, spec_hash, loaded.spec.mode)  # (kept if nothing runs now)
    try:
        sweep_id, resumed = create_or_resume(
            engine, name=loaded.name, kind=loaded.spec.mode, spec=loaded.spec.model_dump(mode="json"),
            spec_hash=spec_hash, trace=trace, num_runs=len(tasks), fresh=fresh, lock=lock)
    except BaseException:
        lock.release()
        if own_engine:
            engine.dispose()
        raise
    done = stored_keys(engine, sweep_id)
    pending = [t for t in tasks if t.key not in done]
    result = SweepResult(sweep_id, resumed, len(tasks), len(tasks) - len(pending), 0, db_url=db_url)
    status, completed = "failed", False
    said: Counter[str] = Counter()  # the runs' warnings, each said once (`sim.sweep.messages`)
    stopping = ExitStack()  # (once stopped before its end: the cleanup with a further Ctrl-C held)
    try:
        back = backend if isinstance(backend, Backend) else (
            make_backend(backend, workers=workers, ray_address=ray_address) if pending else Backend())
        # (nothing to run: none is started, and the one asked for is reported, not the stand-in's "serial")
        result.backend = back.name if pending or isinstance(backend, Backend) else backend_name(backend, ray_address)
        if on_start is not None:
            on_start(len(tasks), result.skipped, result.backend)
        try:
            if pending:
                wanted = {t.trace_id for t in pending}
                traces = {k: v for k, v in all_traces.items() if k in wanted}
                left_out = {k: v for k, v in all_left_out.items() if k in wanted}
                for outcome in said_once(back.run(with_rows_left_out(pending, left_out), traces), said):
                    with interrupt_deferred():  # (Ctrl-C takes effect once the run is written whole)
                        run_id = store_outcome(engine, sweep_id, outcome)
                        result.run_ids[outcome.task.key] = run_id
                        result.ran += 1
                        if outcome.status == "failed":
                            result.failed[outcome.task.key] = outcome.summary.get("error", "")
                    if on_run is not None:
                        on_run(outcome, run_id)
            say_repeats(said)
            completed = True
            status = "failed" if result.failed else "finished"  # (some runs raised: `runs sweeps --status failed`)
        finally:
            if not completed:
                stopping.enter_context(interrupts_held_while_stopping())
            if not isinstance(backend, Backend):
                back.close() if completed else back.abort()  # (Ctrl-C, an error: runs in flight not waited for)
    except KeyboardInterrupt as exc:
        status = "interrupted"
        raise SweepInterrupted(sweep_id, result.skipped + result.ran, result.total) from exc
    finally:
        try:
            finish_sweep(engine, sweep_id, status, ended=ended if resumed and not pending else None)
        finally:  # even when the database refuses that write: the lock's connection and the engine are let go
            try:
                lock.release()
                if own_engine:
                    engine.dispose()
            finally:
                stopping.close()
    return result
