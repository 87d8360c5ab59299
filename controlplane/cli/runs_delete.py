"""`controlplane runs delete RUN --yes`: delete a run and every row of it.

Plain SQL on SQLite (``sqlite3 x.db "delete from run where id=2"``) deletes the run row alone: without
``PRAGMA foreign_keys=ON`` there is no ``ON DELETE CASCADE``, and its requests, decisions, ... stay behind.
This command deletes each table's rows of the run (and rows left behind by such a deletion, whose run
row is gone) in one transaction (`controlplane.storage.orphans.delete_run`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, err, open_stored_runs, out, user_errors


def _counts_text(counts: dict[str, int]) -> str:
    rows = [f"{n:,} {table}" for table, n in counts.items() if table != "run" and n]
    return ", ".join(rows) or "no other rows"


def delete(
    run_id: Annotated[int, typer.Argument(help="The run's id (`runs list`).", metavar="RUN")],
    db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed when stdin is not a "
                                                           "terminal).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete a run still marked running too (one whose process, "
                                                        "on another host, controlplane cannot tell dead; if it is "
                                                        "alive, its next writes fail).")] = False,
) -> None:
    """Delete a run and all its rows (requests, decisions, metric samples, worker events, iterations), in one
    transaction; also the rows a run deleted with plain SQL left behind under its id. A run still running is
    refused without --force. Its id is not given to another run."""
    from controlplane.storage import get_run
    from controlplane.storage.orphans import count_rows, delete_run

    from controlplane.cli.common import resolve_db

    with user_errors():
        url = resolve_db(db)
    with user_errors(url):  # (a driver's error names the database: a read-only file's "attempt to write" did not)
        engine = open_stored_runs(url)
        try:
            counts = count_rows(engine, run_id)
            if not any(counts.values()):
                raise LookupError(f"no run {run_id} and no rows of it in the database")
            if counts["run"]:
                run = get_run(engine, run_id)
                if run["status"] == "running" and not force:
                    raise ValueError(f"run {run_id} is still running (its process writes rows); stop it first (a "
                                     "run whose process died on this host is marked crashed by the next command), "
                                     "or add --force")
                what = f"run {run_id} ({run.get('name') or 'unnamed'}, {run['status']}) and {_counts_text(counts)}"
            else:
                what = f"{_counts_text(counts)} left behind by a deleted run {run_id} (no run row)"
            if not yes:
                if not sys.stdin.isatty():
                    raise ValueError(f"would delete {what}; add --yes to delete them")
                if not typer.confirm(f"delete {what}?", default=False, err=True):
                    err.print("nothing deleted")
                    raise typer.Exit(1)
            deleted = delete_run(engine, run_id)
        finally:
            engine.dispose()
    out.print(f"deleted {'run ' + str(run_id) + ' and ' if deleted['run'] else ''}{_counts_text(deleted)}",
              highlight=False)
