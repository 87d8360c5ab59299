"""Runs left ``running`` by a process that no longer exists are marked ``crashed``.

A replay, a sweep or a daemon killed with SIGKILL (or by the OOM killer, or a power cut) never
closes its run, so the row would stay ``running`` forever. Every run row records the process that
owns it when it is inserted (`controlplane.storage.owner`: host name, pid and the process's start
time, under ``config["process"]``; the daemon adds its journal with :func:`claim_run`), and
:func:`mark_crashed_runs` marks ``crashed`` every ``running`` run claimed by a process of *this
host* that is gone. It runs where a command opens a database: the reading commands (``runs
list``, ``runs show``, ...; not on a read-only database), the start of every run (the replay's
writer, the in-process recorder, a sweep) and the daemon's start. Runs of other hosts, of other
PID namespaces (containers sharing the host name, as with host networking: their pids mean
nothing here), runs of live processes and runs never claimed (rows from before claims existed)
are never touched. A pid reused by an unrelated process is told apart by its start time.

The crashed run's ``summary`` says what is in the database: ``requests_recorded`` (request rows
written before the kill), and, from the run's journal of accepted requests
(`controlplane.storage.journal`, its path under ``config["process"]["journal"]``; the daemon
keeps one), ``requests_accepted`` and the requests the daemon had accepted and not recorded when
it died, so nothing is silently missing: ``requests_answered_unrecorded`` (their clients had their
final answer; not to be retried) and ``requests_lost`` with ``lost_request_ids`` (never answered:
safe to retry). A run without
a journal (a simulated replay, a sweep's run) has those None and a ``lost_note`` saying why: a
simulated run is replayed again from its trace and seed. ``finished_at`` is when it was found,
not when it died.

A sweep's row is claimed the same way (under its ``spec["process"]``: the sweep table has no
config column, and the spec hash that finds a sweep to resume is computed from the spec file, not
from this column): :func:`mark_crashed_sweeps`, run with :func:`mark_crashed_runs` by
:func:`mark_crashed_quietly`, marks ``crashed`` a ``running`` sweep whose process of this host is
gone. Running the same spec again resumes it as it resumes an ``interrupted`` one.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, func, select, update

from controlplane.storage import spill, spill_notes
from controlplane.storage.db import describe_url, sqlite_path
from controlplane.storage.journal import read_answered, read_journal
from controlplane.storage.models import Request, Run, Sweep
from controlplane.storage.owner import pid_namespace, process_alive, process_marker

log = logging.getLogger("controlplane.storage")

__all__ = ["claim_run", "mark_crashed_quietly", "mark_crashed_runs", "mark_crashed_sweeps", "process_alive",
           "process_marker"]


def claim_run(engine: Engine, run_id: int, marker: dict[str, Any] | None = None) -> None:
    """Record in the run's config which process owns it (``config["process"]``). A marker naming the
    run's journal (``journal``, the daemon's) also sends the notes of the run's spills to its folder
    (`controlplane.storage.spill_notes.remember_journal`), where `mark_crashed_runs` looks."""
    marker = marker or process_marker()
    with engine.begin() as conn:
        config = conn.execute(select(Run.config).where(Run.id == run_id)).scalar_one()
        config = dict(config or {})
        config["process"] = marker
        conn.execute(update(Run).where(Run.id == run_id).values(config=config))
    if isinstance(marker.get("journal"), str):
        spill_notes.remember_journal(_database_key(engine), run_id, Path(marker["journal"]).parent)


#: At most this many lost request ids are listed in a crashed run's summary (all are counted).
MAX_LOST_LISTED = 10_000


def _sweep_advice(conn: Any, sweep_id: int | None) -> str | None:
    """For a run of a sweep or search, how to get it whole: resume the sweep (which runs it again),
    or run the search again (a search does not resume); None for a run of no sweep."""
    if sweep_id is None:
        return None
    kind = conn.execute(select(Sweep.kind).where(Sweep.id == sweep_id)).scalar_one_or_none()
    if kind == "search":
        return f"a run of search {sweep_id}, which does not resume: run the search again to start afresh"
    return f"a run of sweep {sweep_id}: run the same spec again to resume the sweep, which runs it again"


def _lost_requests(conn: Any, run_id: int, journal: Any, mode: str | None,
                   advice: str | None = None) -> dict[str, Any]:
    """What the run's journal says about requests accepted without a row (None where the run kept no
    journal): ``requests_accepted``; ``requests_answered_unrecorded`` (their clients had their final
    answer: ``answered_unrecorded_by_status``, ``answered_unrecorded_ids``), and ``requests_lost``
    and ``lost_request_ids``, never answered: their connections died with the process, so only they
    are safe to retry. ``advice``: how to get a sweep's run whole (`_sweep_advice`), in place of
    replaying it alone."""
    if not isinstance(journal, str) or not Path(journal).exists():
        whole = advice or "replay the trace with the same seed for the whole run"
        note = (f"a simulated run keeps no journal: its request rows stop where it was killed; {whole}"
                if mode == "sim" else "no journal: requests accepted but not recorded cannot be told")
        return {"requests_accepted": None, "requests_lost": None, "lost_note": note}
    accepted, answers = read_journal(journal), read_answered(journal)
    have = set(conn.execute(select(Request.request_id).where(Request.run_id == run_id)).scalars())
    missing = [rid for rid in accepted if rid not in have]
    answered = [rid for rid in missing if rid in answers]
    lost = [rid for rid in missing if rid not in answers]
    by_status: dict[str, int] = {}
    for rid in answered:
        by_status[answers[rid]] = by_status.get(answers[rid], 0) + 1
    out: dict[str, Any] = {"requests_accepted": len(accepted), "requests_answered_unrecorded": len(answered),
                           "answered_unrecorded_by_status": by_status,
                           "answered_unrecorded_ids": answered[:MAX_LOST_LISTED],
                           "requests_lost": len(lost), "lost_request_ids": lost[:MAX_LOST_LISTED]}
    if len(lost) > MAX_LOST_LISTED:
        out["lost_request_ids_truncated"] = True
    if len(answered) > MAX_LOST_LISTED:
        out["answered_unrecorded_ids_truncated"] = True
    return out


def _database_key(engine: Engine) -> str:
    return spill_notes.database_key(describe_url(engine), sqlite_path(engine))


def _spilled(spills: list[Path], url: str) -> dict[str, Any]:
    """A run whose process ended with rows the database did not take (it was away at the close:
    `controlplane.storage.spill_notes`): not killed, its rows and its end are in ``spills``."""
    files = ", ".join(map(str, spills))
    note = (f"not killed: it ended while the database was away, and its last rows and its end (status, summary) "
            f"were saved to {files}; {spill.load_advice(spills[0], url)}: the run is then complete")
    return {"requests_accepted": None, "requests_lost": None, "spilled": [str(p) for p in spills],
            "lost_note": note}


def mark_crashed_runs(
    engine: Engine,
    *,
    exclude: set[int] | frozenset[int] = frozenset(),
    host: str | None = None,
    alive: Callable[[int, int | None], bool] = process_alive,
) -> list[dict[str, Any]]:
    """Mark ``crashed`` the ``running`` runs owned by dead processes of this host; return them.

    Each returned dict holds ``run_id``, ``pid`` and ``requests_recorded``. The update is
    conditional on the run still being ``running``, so two daemons starting at once agree.
    """
    host = socket.gethostname() if host is None else host
    marked: list[dict[str, Any]] = []
    with engine.connect() as conn:
        rows = conn.execute(select(Run.id, Run.config, Run.summary, Run.mode, Run.sweep_id, Run.started_at)
                            .where(Run.status == "running")).all()
    for run_id, config, summary, mode, sweep_id, started_at in rows:
        if run_id in exclude:
            continue
        owner = (config or {}).get("process") if isinstance(config, dict) else None
        if not _dead_owner(owner, host, alive):
            continue
        journal = owner.get("journal")  # (its folder holds the note of a spill at its close: spill_notes)
        spills = spill_notes.spills_of(run_id, _database_key(engine), started_at,
                                       [Path(journal).parent] if isinstance(journal, str) else [])
        with engine.begin() as conn:
            recorded = conn.execute(select(func.count()).select_from(Request).where(Request.run_id == run_id)).scalar_one()
            advice = _sweep_advice(conn, sweep_id)
            new_summary = {**(summary or {}), "crashed": True, "requests_recorded": int(recorded),
                           "found_by": process_marker(),
                           **(_spilled(spills, describe_url(engine)) if spills else
                              _lost_requests(conn, run_id, owner.get("journal"), mode, advice))}
            done = conn.execute(
                update(Run).where(Run.id == run_id, Run.status == "running")
                .values(status="crashed", summary=new_summary, finished_at=datetime.now(timezone.utc))
            ).rowcount
        if not done:
            continue
        lost = new_summary.get("requests_lost")
        if spills:
            log.warning("run %d was left running by pid %d on %s, which is gone: marked crashed (%d request rows "
                        "recorded); %s", run_id, owner["pid"], host, recorded, new_summary["lost_note"])
        else:
            losses = (f"a simulated run keeps no journal: {advice or 'replay its trace with the same seed'}"
                      if mode == "sim" else _losses(new_summary))
            # (a sim run accepts none)
            log.warning("run %d was left running by pid %d on %s, which is gone: marked crashed "
                        "(%d request rows recorded, %s)", run_id, owner["pid"], host, recorded, losses)
        if owner.get("journal"):
            Path(owner["journal"]).unlink(missing_ok=True)  # its content is in the summary now
        marked.append({"run_id": run_id, "pid": owner["pid"], "requests_recorded": int(recorded),
                       "requests_lost": lost,
                       "requests_answered_unrecorded": new_summary.get("requests_answered_unrecorded")})
    return marked


def _losses(summary: dict[str, Any]) -> str:
    """The log's words for a crashed daemon run's accepted requests without a row."""
    lost = summary.get("requests_lost")
    if lost is None:
        return "unknown accepted requests lost"
    answered = summary.get("requests_answered_unrecorded") or 0
    return (f"{lost} accepted requests never answered (safe to retry), {answered} answered but not recorded "
            "(not to retry)")


def _dead_owner(owner: Any, host: str, alive: Callable[[int, int | None], bool]) -> bool:
    """Whether ``owner`` (a process marker) names a process of ``host`` that is gone."""
    if not isinstance(owner, dict) or owner.get("host") != host or not isinstance(owner.get("pid"), int):
        return False
    ns = owner.get("pid_ns")
    if ns is not None and ns != pid_namespace():
        return False  # another container's pid (same host name, its own PID namespace): not ours to judge
    return not alive(owner["pid"], owner.get("start_ticks"))


def mark_crashed_sweeps(
    engine: Engine,
    *,
    host: str | None = None,
    alive: Callable[[int, int | None], bool] = process_alive,
) -> list[dict[str, Any]]:
    """Mark ``crashed`` the ``running`` sweeps owned (``spec["process"]``) by dead processes of this
    host; return them (``sweep_id``, ``pid``, ``runs_stored``: its finished runs)."""
    host = socket.gethostname() if host is None else host
    marked: list[dict[str, Any]] = []
    with engine.connect() as conn:
        rows = conn.execute(select(Sweep.id, Sweep.spec, Sweep.kind).where(Sweep.status == "running")).all()
    for sweep_id, spec, kind in rows:
        owner = spec.get("process") if isinstance(spec, dict) else None
        if not _dead_owner(owner, host, alive):
            continue
        with engine.begin() as conn:
            done = conn.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.status == "running")
                                .values(status="crashed", finished_at=datetime.now(timezone.utc))).rowcount
            stored = conn.execute(select(func.count()).select_from(Run)
                                  .where(Run.sweep_id == sweep_id, Run.status == "finished")).scalar_one()
        if not done:
            continue
        if kind == "search":  # (a search always starts afresh; it stores only its finished full-trace runs)
            log.warning("search %d was left running by pid %d on %s, which is gone: marked crashed (%d runs "
                        "stored); a search does not resume: run it again to start afresh", sweep_id, owner["pid"],
                        host, stored)
        else:
            log.warning("sweep %d was left running by pid %d on %s, which is gone: marked crashed (%d runs "
                        "stored); run the same spec again to resume it", sweep_id, owner["pid"], host, stored)
        marked.append({"sweep_id": sweep_id, "pid": owner["pid"], "runs_stored": int(stored)})
    return marked


def mark_crashed_quietly(engine: Engine, *, exclude: set[int] | frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """:func:`mark_crashed_runs` for a command that opens the database to do something else: a
    database that cannot be read or written here (a read-only file, an outage) is logged, not raised,
    and nothing is marked (quietly for a role that may not write: a reader). Sweeps of dead processes are marked too (:func:`mark_crashed_sweeps`)."""
    from sqlalchemy.exc import SQLAlchemyError

    from controlplane.storage.retry import describe_error, is_permission_denied

    try:
        runs = mark_crashed_runs(engine, exclude=exclude)
        mark_crashed_sweeps(engine)
        return runs
    except (SQLAlchemyError, OSError) as exc:
        if isinstance(exc, SQLAlchemyError) and is_permission_denied(exc):
            # A role that may read and not write (docs/configuration.md's readers): not its to mark.
            log.debug("not checking for crashed runs: this role may not update runs (%s)", describe_error(exc))
        else:
            log.warning("could not check for crashed runs: %s", describe_error(exc))
        return []
