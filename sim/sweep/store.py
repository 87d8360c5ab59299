"""A sweep's rows: the ``sweep`` row, and each finished run written from the driver process.

One writer (the driver) per sweep keeps SQLite safe and makes the database reachable from
nowhere else: workers return their rows, :func:`store_outcome` writes them through a
``RunRecorder`` (the same bulk path a replay uses) with the run's ``sweep_id`` and ``sweep_key``.
A run is ``finished`` only once its rows are in; a resumed sweep skips those and deletes any
other run of the sweep (a run cut off while it was being written) before doing it again. A sweep whose
finished runs were made with other plugin (or controlplane) versions than this process loads is not resumed:
a new sweep runs every point again (`sim.sweep.resume_versions`), so no sweep mixes the runs of two versions.
A sweep another process runs is not resumed (PostgreSQL: `sim.sweep.lock`; SQLite: its row, `sim.sweep.resume_claim`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.session import without_password
from controlplane.storage import RunRecorder
from controlplane.storage.models import Run, Sweep
from controlplane.storage.owner import process_marker
from sim.sweep.lock import SweepBusy, SweepLock
from sim.sweep.resume_claim import claiming, holder, running_elsewhere
from sim.sweep.resume_versions import CONTROLPLANE, controlplane_version, version_changes
from sim.sweep.worker import RunOutcome

__all__ = ["create_or_resume", "finish_sweep", "last_end", "stored_keys", "store_outcome", "sweep_runs"]

_SWEEP = Sweep.__table__
_RUN = Run.__table__

log = logging.getLogger("controlplane.sweep")


def create_or_resume(engine: Engine, *, name: str, kind: str, spec: dict[str, Any], spec_hash: str,
                     trace: str | None, num_runs: int, fresh: bool = False,
                     lock: SweepLock | None = None) -> tuple[int, bool]:
    """The id of the newest sweep with this spec hash (resumed), or of a new one; and whether resumed.
    With ``lock``, the sweep is taken for this process first; one another process is running
    raises `SweepBusy` (nothing written). The row records this process as its owner (under
    ``spec["process"]``), so a sweep killed without closing it is marked ``crashed`` by the next
    command (`controlplane.storage.crashed.mark_crashed_sweeps`). A sweep whose finished runs were made
    with other plugin versions than this process loads is not resumed: a new one is started, saying so."""
    spec = {**spec, "process": process_marker()}
    with claiming(engine) as conn:
        changed: list[str] = []
        if not fresh:
            row = conn.execute(_resumable(spec_hash, kind)).first()
            changed = _changed_versions(conn, int(row[0])) if row is not None else []
            if row is not None and not changed:
                other = running_elsewhere(engine, row[2], row[3]) if lock is not None else None
                if other is not None or (lock is not None and not lock.take(int(row[0]))):
                    raise SweepBusy(f"sweep {row[0]} (this spec, this trace) is being run by another process "
                                    f"right now{holder(other)}; run it again when that one has finished (its stored "
                                    "runs are then skipped), or add --fresh to start a separate sweep")
                conn.execute(update(_SWEEP).where(_SWEEP.c.id == row[0])
                             .values(status="running", finished_at=None, num_runs=num_runs, spec=spec))
                return int(row[0]), True
        values = {"name": name, "kind": kind, "status": "running", "spec": spec, "spec_hash": spec_hash,
                  "trace": trace, "num_runs": num_runs, "created_at": datetime.now(timezone.utc)}
        sweep_id = int(conn.execute(insert(_SWEEP).values(values)).inserted_primary_key[0])
        if lock is not None:
            lock.take(sweep_id)  # (before the row is committed: nobody else can have it yet)
        if changed:
            log.warning("sweep %d's stored runs were made with %s: not resumed (a sweep holds the runs of one set of "
                        "plugin versions); sweep %d runs every point again, sweep %d is kept as it is", row[0],
                        ", ".join(changed), sweep_id, row[0])
        return sweep_id, False


def _changed_versions(conn: Any, sweep_id: int) -> list[str]:
    """How the plugin versions the sweep's finished runs were made with differ from this process's (none: alike)."""
    from controlplane.plugin_manager import discover_plugins

    rows = conn.execute(select(_RUN.c.config, _RUN.c.plugins, _RUN.c.notes)
                        .where(_RUN.c.sweep_id == sweep_id, _RUN.c.status == "finished"))
    return version_changes(((config, plugins, _notes(notes)) for config, plugins, notes in rows), discover_plugins())


def _notes(text: str | None) -> dict[str, Any]:
    """A sweep run's notes (its point's ``overrides``, ``stage``, the controlplane version that stored it)."""
    try:
        notes = json.loads(text or "{}")
    except ValueError:
        return {}
    return notes if isinstance(notes, dict) else {}


def _resumable(spec_hash: str, kind: str) -> Any:
    """The newest sweep of this spec hash and kind (the one a run of the same spec resumes): id, end, status, spec."""
    return (select(_SWEEP.c.id, _SWEEP.c.finished_at, _SWEEP.c.status, _SWEEP.c.spec)
            .where(_SWEEP.c.spec_hash == spec_hash, _SWEEP.c.kind == kind).order_by(_SWEEP.c.id.desc()).limit(1))


def last_end(engine: Engine, spec_hash: str, kind: str) -> datetime | None:
    """When the sweep a run of this spec would resume last ended (None: none, or never ended): kept by
    a resume that finds nothing to run (`finish_sweep`'s ``ended``), which did not run the sweep again."""
    with engine.connect() as conn:
        row = conn.execute(_resumable(spec_hash, kind)).first()
    return None if row is None else row[1]


def stored_keys(engine: Engine, sweep_id: int) -> set[str]:
    """Keys of the sweep's finished runs; other runs of the sweep (cut off mid-write) are deleted."""
    with engine.begin() as conn:
        conn.execute(delete(_RUN).where(_RUN.c.sweep_id == sweep_id, _RUN.c.status != "finished"))
        rows = conn.execute(select(_RUN.c.sweep_key).where(_RUN.c.sweep_id == sweep_id))
        return {r[0] for r in rows}


def store_outcome(engine: Engine, sweep_id: int, outcome: RunOutcome, *, batch_size: int = 50_000) -> int:
    """Write one run (its row, then its rows, then ``finished``, or ``failed`` with the error in its
    summary); return its run id."""
    task = outcome.task
    summary = dict(outcome.summary)
    with RunRecorder(engine, batch_size=batch_size) as rec:
        run_id = rec.start_run(
            name=task.config.get("name"), mode="sim", trace=task.trace_name, trace_format=task.trace_format,
            seed=task.seed, config={**without_password(task.config),
                                    **({"trace_read": task.trace_read} if task.trace_read else {}),
                                    **({"latency_files": files} if (files := _latency_files(task.config)) else {}),
                                    "process": process_marker()},
            plugins=outcome.plugins,
            started_at=outcome.started_at or datetime.now(timezone.utc),
        )
        notes = json.dumps({"overrides": task.overrides, "stage": task.stage, CONTROLPLANE: controlplane_version()},
                           sort_keys=True, default=str)
        _join_sweep(engine, run_id, sweep_id, task.key, notes)
        status = "finished" if outcome.status == "finished" else "failed"
        for table, rows in outcome.rows.items():
            for values in rows:
                rec.add_values(table, values)
        for row in outcome.worker_events:
            rec.add_worker_event(row)
        summary = {"run_id": run_id, **summary, "wall_s": round(outcome.wall_s, 3)}
        rec.finish_run(run_id, status=status, summary=summary,
                       finished_at=outcome.finished_at or datetime.now(timezone.utc), wall_s=outcome.wall_s,
                       sim_end_s=outcome.sim_end_s)
    return run_id


def _join_sweep(engine: Engine, run_id: int, sweep_id: int, key: str, notes: str) -> None:
    """Make the run just started the sweep's run of point ``key``. Where the sweep has that point stored already
    (another process ran it meanwhile), the run is deleted in the same transaction (left ``running`` without a
    sweep, it was later marked crashed as a lost replay) and `SweepBusy` says so."""
    taken = False
    with engine.begin() as conn:
        try:
            with conn.begin_nested():
                conn.execute(update(_RUN).where(_RUN.c.id == run_id).values(sweep_id=sweep_id, sweep_key=key,
                                                                            notes=notes))
        except IntegrityError:
            conn.execute(delete(_RUN).where(_RUN.c.id == run_id))
            taken = True
    if taken:  # (once the delete is committed)
        raise SweepBusy(f"sweep {sweep_id}'s run of point {key} was stored meanwhile by another process: another "
                        "`sim sweep` of this spec is running on this database; run it again when that one has "
                        "finished (its stored runs are then skipped), or add --fresh to start a separate sweep")


def finish_sweep(engine: Engine, sweep_id: int, status: str, result: dict[str, Any] | None = None, *,
                 num_runs: int | None = None, ended: datetime | None = None) -> None:
    """Close the sweep row with its status and result; ``num_runs`` (a search's, known only at its end:
    the full-trace runs it stored) replaces the count it was created with. It ends now, or at ``ended``
    (a resume that ran nothing keeps the end it had)."""
    values: dict[str, Any] = {"status": status, "finished_at": ended or datetime.now(timezone.utc)}
    if result is not None:
        values["result"] = result
    if num_runs is not None:
        values["num_runs"] = num_runs
    with engine.begin() as conn:
        conn.execute(update(_SWEEP).where(_SWEEP.c.id == sweep_id).values(values))


def sweep_runs(engine: Engine, sweep_id: int) -> list[dict[str, Any]]:
    """The sweep's stored runs, whatever their status (id, sweep_key, seed, config, summary, status, finished_at,
    and overrides: the point's dotted keys), in run id order."""
    cols = (_RUN.c.id, _RUN.c.sweep_key, _RUN.c.seed, _RUN.c.config, _RUN.c.summary, _RUN.c.status,
            _RUN.c.finished_at, _RUN.c.notes)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in
                conn.execute(select(*cols).where(_RUN.c.sweep_id == sweep_id).order_by(_RUN.c.id))]
    for r in rows:
        r["overrides"] = _notes(r.pop("notes")).get("overrides", {})
    return rows


def _latency_files(config: dict[str, Any]) -> dict[str, dict[str, str]] | None:
    """The latency-model files the run's deployments read, with their SHA-256, as a replay stores them."""
    from controlplane.config import RunConfig
    from sim.replay import latency_files

    return latency_files(RunConfig.model_validate(config))
