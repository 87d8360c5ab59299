"""Copying stored runs from one database to another (``controlplane runs copy``).

A run and every row of it (requests, decisions, metric samples, worker events, iterations) are read from the source
and written to the target in one transaction: a copy that fails (a full disk, a lost connection, Ctrl-C) leaves no
part of the run behind. The copy gets the target's next run id; its rows keep everything else, so `runs compare`,
`runs show`, exports and `calibrate` read the copy as they read the original. A run of a sweep loses its link to the
sweep (the target has no such sweep); where it came from is kept in its ``notes`` (``copied_from``: the source
database with its password masked, run id, sweep id and key), with the sweep point's overrides it had there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Iterable

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection, Engine

from controlplane.storage import models
from controlplane.storage.errors import StorageError, mask_password
from controlplane.storage.orphans import CHILD_TABLES, refuse_orphans

__all__ = ["CopiedRun", "COPY_CHUNK_ROWS", "check_copyable", "copied_from", "copy_run", "earlier_copies"]

#: Rows read and written per batch (each table streamed in id order, so memory stays flat on big runs).
COPY_CHUNK_ROWS: Final = 5_000

#: A run still being written (its process adds rows) is not copied: the copy would be a part of it.
_UNFINISHED: Final = ("running",)


@dataclass(frozen=True)
class CopiedRun:
    """One copied run: its id in the source and in the target, and the rows copied per table."""

    source_id: int
    target_id: int
    rows: dict[str, int] = field(default_factory=dict)


def copied_from(run: dict[str, Any]) -> dict[str, Any] | None:
    """Where a copied run came from (its ``notes``' ``copied_from``), or None for a run made here."""
    try:
        notes = json.loads(run.get("notes") or "{}")
    except (TypeError, ValueError):
        return None
    origin = notes.get("copied_from") if isinstance(notes, dict) else None
    return origin if isinstance(origin, dict) else None


def _notes_with_origin(notes: str | None, origin: dict[str, Any]) -> str:
    try:
        kept = json.loads(notes) if notes else {}
    except ValueError:  # (free text from another tool: kept under its own key)
        kept = {"text": notes}
    if not isinstance(kept, dict):
        kept = {"text": notes}
    earlier = kept.get("copied_from")  # a copy of a copy names the first database too
    kept["copied_from"] = {**origin, **({"earlier": earlier} if earlier else {})}
    return json.dumps(kept, sort_keys=True)


def _origin_url(engine: Engine) -> str:
    """The source as a copy names it: its URL with the password hidden and a SQLite file's path absolute (a copy
    read from another folder or machine still says which file)."""
    from controlplane.storage.schema_upgrade import absolute_url

    return absolute_url(engine)


def check_copyable(source: Engine, target_url: str, run_ids: Iterable[int]) -> None:
    """Every run of ``run_ids`` can be copied from ``source`` to ``target_url``, checked before any is: the target
    is another database (however its URL is spelled: `same_database`), and each run is in the source and has ended
    (a LookupError or ValueError naming the first that is not)."""
    from controlplane.storage.identity import same_database

    if same_database(source.url.render_as_string(hide_password=False), target_url):
        raise ValueError("the source and the target are the same database: a copy there would be a second run of "
                         "the same rows (replay it again instead)")
    for run_id in run_ids:
        _source_run(source, run_id)


def earlier_copies(source: Engine, target: Engine) -> dict[int, int]:
    """The runs of ``source`` the target holds copies of already: {source run id: the copy's id} (the first copy)."""
    from controlplane.storage.identity import same_database

    run = _table("run")
    here = _origin_url(source)
    found: dict[int, int] = {}
    with target.connect() as conn:
        rows = conn.execute(select(run.c.id, run.c.notes).where(run.c.notes.like('%"copied_from"%'))
                            .order_by(run.c.id)).all()
    for copy_id, notes in rows:
        origin = copied_from({"notes": notes})
        if origin and isinstance(origin.get("run_id"), int) and same_database(str(origin.get("database")), here):
            found.setdefault(origin["run_id"], copy_id)
    return found


def _table(name: str) -> Table:
    return models.metadata.tables[name]


def _source_run(source: Engine, run_id: int) -> dict[str, Any]:
    run = _table("run")
    with source.connect() as conn:
        row = conn.execute(select(run).where(run.c.id == run_id)).mappings().first()
    if row is None:
        raise LookupError(f"no run {run_id} in {mask_password(source.url.render_as_string(hide_password=True))}")
    if row["status"] in _UNFINISHED:
        raise ValueError(f"run {run_id} is still running (its process writes rows): copy it when it has ended "
                         "(a run whose process died on this host is marked crashed by the next command)")
    return dict(row)


def _chunks(source: Engine, table: Table, run_id: int) -> Iterable[list[dict[str, Any]]]:
    """The run's rows of ``table`` in id order, ``COPY_CHUNK_ROWS`` at a time, without their ids (the target
    gives its own)."""
    cols = [c for c in table.c if c.name != "id"]
    last = None
    with source.connect() as conn:
        while True:
            query = select(table.c.id, *cols).where(table.c.run_id == run_id)
            if last is not None:
                query = query.where(table.c.id > last)
            rows = conn.execute(query.order_by(table.c.id).limit(COPY_CHUNK_ROWS)).mappings().all()
            if not rows:
                return
            last = rows[-1]["id"]
            yield [{c.name: r[c.name] for c in cols} for r in rows]


def copy_run(source: Engine, target: Engine, run_id: int, *,
             progress: Callable[[str, int], None] | None = None) -> CopiedRun:
    """Copy run ``run_id`` of ``source`` with all its rows into ``target`` (both at the schema's head), in one
    transaction of the target; return the ids and row counts. ``progress(table, rows)`` is called after each
    batch written. A run still running is a ValueError, a missing one a LookupError."""
    check_copyable(source, target.url.render_as_string(hide_password=False), [run_id])
    original = _source_run(source, run_id)
    origin = {"database": _origin_url(source), "run_id": run_id,
              "sweep_id": original.get("sweep_id"), "sweep_key": original.get("sweep_key")}
    values = {k: v for k, v in original.items() if k != "id"}
    values.update(sweep_id=None, sweep_key=None, notes=_notes_with_origin(original.get("notes"), origin))
    target_where = mask_password(target.url.render_as_string(hide_password=True))
    counts: dict[str, int] = {"run": 1}
    with target.begin() as conn:
        new_id = int(conn.execute(_table("run").insert().values(**values)).inserted_primary_key[0])
        refuse_orphans(conn, new_id, target_where)
        for name in CHILD_TABLES:
            counts[name] = _copy_rows(conn, source, _table(name), run_id, new_id, progress)
    return CopiedRun(run_id, new_id, counts)


def _copy_rows(conn: Connection, source: Engine, table: Table, run_id: int, new_id: int,
               progress: Callable[[str, int], None] | None) -> int:
    n = 0
    for chunk in _chunks(source, table, run_id):
        for row in chunk:
            row["run_id"] = new_id
        try:
            conn.execute(table.insert(), chunk)
        except Exception as exc:  # (a driver's own error: which table, which run)
            raise StorageError(f"copying run {run_id}'s {table.name} rows failed after {n:,}: {exc}") from exc
        n += len(chunk)
        if progress is not None:
            progress(table.name, len(chunk))
    return n
