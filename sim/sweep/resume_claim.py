"""Who may resume a sweep on a database without PostgreSQL's advisory locks (SQLite).

`sim.sweep.lock.SweepLock` holds a sweep on PostgreSQL; SQLite took no lock, so three `sim sweep` of one spec
started at once into one file all resumed the first's sweep, ran its points again, and the second to store a point
died on ``IntegrityError: UNIQUE constraint failed: run.sweep_id, run.sweep_key``, its half-started run left
``running`` (then ``crashed``). There, the sweep row says who runs it: ``status`` ``running`` and its process under
``spec["process"]`` (`controlplane.storage.crashed`, which marks a gone process's sweep ``crashed`` before a sweep
starts). A process that finds the sweep it would resume `running_elsewhere` is refused, as on PostgreSQL; the row is
read and claimed in one ``BEGIN IMMEDIATE`` transaction (`claiming`), so of processes starting together one claims
it and the others see it claimed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine

from controlplane.storage.crashed import _dead_owner
from controlplane.storage.db import _SQLITE_BEGIN_OPTION
from controlplane.storage.owner import process_alive, process_marker

__all__ = ["claiming", "holder", "running_elsewhere"]


@contextlib.contextmanager
def claiming(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads and claims a sweep row with no other writer between: on SQLite begun with
    ``BEGIN IMMEDIATE`` (its write lock taken first, a second process waiting for it), elsewhere a plain one."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield conn


def running_elsewhere(engine: Engine, status: str | None, spec: Any) -> dict[str, Any] | None:
    """The process marker of another process that runs this sweep row now (``running``, claimed by a process other
    than this one and not known to be gone: one of another host cannot be told); None where no other does, and
    always on PostgreSQL, whose advisory lock (`sim.sweep.lock`) tells it instead."""
    if engine.dialect.name == "postgresql" or status != "running":
        return None
    owner = spec.get("process") if isinstance(spec, dict) else None
    if not isinstance(owner, dict) or owner == process_marker():
        return None
    host = process_marker()["host"]
    return None if _dead_owner(owner, host, process_alive) else owner


def holder(owner: dict[str, Any] | None) -> str:
    """`` (pid 4242 on vm)``: the process `running_elsewhere` found, for the refusal; empty for none."""
    return f" (pid {owner.get('pid')} on {owner.get('host')})" if owner else ""
