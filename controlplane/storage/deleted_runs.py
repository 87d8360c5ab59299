"""A run deleted while it is being written (`controlplane runs delete RUN --force`, or SQL).

Its recorder's next rows name a run id the database no longer has: a foreign-key violation at every try. Taken
for a row refused for its data, a flush of 20,000 rows was committed again row by row in savepoints
(`controlplane.storage.isolate`), every row refused, saved to refused files (80 MB each) and logged; a replay then
ground on for minutes, and on PostgreSQL the savepoints exhausted the server's lock table ("out of shared memory",
failing every session). So the first foreign-key refusal of a flush (and a run update that finds no run) asks
the database once which of the flush's runs still exist: where one is gone, the write raises `RunDeleted`, the
recorder drops that run's rows (in memory and spilled), writes none of it again, and its flushes and its close
raise the same one error; nothing is bisected, retried, refused to a file or spilled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from controlplane.storage.errors import RunDeleted

__all__ = ["deleted_error", "is_foreign_key_violation", "missing_runs"]

#: PostgreSQL's SQLSTATE of a foreign-key violation.
_FOREIGN_KEY_VIOLATION: Final = "23503"


def is_foreign_key_violation(exc: BaseException) -> bool:
    """Whether the database refused ``exc``'s statement for a foreign key (a row naming no run)."""
    orig = getattr(exc, "orig", None) or exc
    return (getattr(orig, "sqlstate", None) == _FOREIGN_KEY_VIOLATION
            or "FOREIGN KEY constraint failed" in str(orig))


def missing_runs(engine: Any, run_ids: Iterable[int]) -> set[int]:
    """The ids of ``run_ids`` that name no run row in ``engine``'s database (one query)."""
    from sqlalchemy import select

    from controlplane.storage.models import Run

    ids = set(run_ids)
    if not ids:
        return set()
    run = Run.__table__
    with engine.connect() as conn:
        found = set(conn.scalars(select(run.c.id).where(run.c.id.in_(sorted(ids)))))
    return ids - found


def deleted_error(run_ids: Iterable[int], url: str) -> RunDeleted:
    """The one error of runs deleted while being written."""
    ids = sorted(set(run_ids))
    runs = f"run {ids[0]} was" if len(ids) == 1 else f"runs {', '.join(map(str, ids))} were"
    return RunDeleted(f"{runs} deleted while being written (no run row in {url} any more: `controlplane runs delete "
                      "--force`, or SQL): the rows not yet written were dropped, and nothing more of it is recorded",
                      run_ids=frozenset(ids))
