"""`controlplane runs delete RUN... --yes` and `runs delete --sweep N --yes`: delete runs and every row of them.

Plain SQL on SQLite (``sqlite3 x.db "delete from run where id=2"``) deletes the run row alone: without
``PRAGMA foreign_keys=ON`` there is no ``ON DELETE CASCADE``, and its requests, decisions, ... stay behind.
This command deletes each table's rows of a run (and rows left behind by such a deletion, whose run
row is gone) in one transaction a run (`controlplane.storage.orphans.delete_run`). ``--sweep N`` deletes a
sweep's (or search's) runs so, then its row, so that `runs sweeps` no longer lists it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, NamedTuple, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, err, open_stored_runs, out, user_errors

#: How many runs a question or a summary names before it says "...".
_NAMED = 10


class _Planned(NamedTuple):
    """One run to delete: its id, its rows by table (``run``: 1 where its row is there) and its row (None if gone)."""

    run_id: int
    counts: dict[str, int]
    run: dict[str, Any] | None


def _counts_text(counts: dict[str, int]) -> str:
    rows = [f"{n:,} {table}" for table, n in counts.items() if table != "run" and n]
    return ", ".join(rows) or "no other rows"


def _total(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for table, n in c.items():
            total[table] = total.get(table, 0) + n
    return total


def _ids_text(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:_NAMED])) + (f", ... ({len(ids)} in all)" if len(ids) > _NAMED else "")


def _plan(engine: Any, run_id: int, force: bool) -> _Planned:
    """What deleting ``run_id`` deletes; ``LookupError`` where nothing names it, ``ValueError`` for a run still
    running without ``force``."""
    from controlplane.storage import get_run
    from controlplane.storage.orphans import count_rows

    counts = count_rows(engine, run_id)
    if not any(counts.values()):
        raise LookupError(f"no run {run_id} and no rows of it in the database")
    run = get_run(engine, run_id) if counts["run"] else None
    if run is not None and run["status"] == "running" and not force:
        raise ValueError(f"run {run_id} is still running (its process writes rows); stop it first (a run whose "
                         "process died on this host is marked crashed by the next command), or add --force")
    return _Planned(run_id, counts, run)


def _planned_text(p: _Planned) -> str:
    if p.run is None:
        return f"{_counts_text(p.counts)} left behind by a deleted run {p.run_id} (no run row)"
    return f"run {p.run_id} ({p.run.get('name') or 'unnamed'}, {p.run['status']}) and {_counts_text(p.counts)}"


def _sweep_plan(engine: Any, sweep_id: int, force: bool) -> tuple[dict[str, Any] | None, list[int]]:
    """Sweep ``sweep_id``'s row (None where only runs naming it are left) and its runs' ids."""
    from controlplane.storage.orphans import sweep_of

    row, run_ids = sweep_of(engine, sweep_id)
    if row is None and not run_ids:
        raise LookupError(f"no sweep {sweep_id} and no run of it in the database (`runs sweeps` lists them)")
    if row is not None and row["status"] == "running" and not force:
        raise ValueError(f"{row['kind']} {sweep_id} is still running (its process stores runs); stop it first (one "
                         "whose process died on this host is marked crashed by the next command), or add --force")
    return row, run_ids


def _ask(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ValueError(f"would delete {what}; add --yes to delete them")
    if not typer.confirm(f"delete {what}?", default=False, err=True):
        err.print("nothing deleted")
        raise typer.Exit(1)


def delete(
    run_ids: Annotated[Optional[list[int]], typer.Argument(
        help="The runs' ids (`runs list`), one or more: `runs delete 16 17 --yes`.", metavar="RUN",
        show_default=False)] = None,
    sweep: Annotated[Optional[int], typer.Option(
        "--sweep", help="Delete this sweep or search (`runs sweeps`): every run of it, then its row.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking (needed when stdin is not a "
                                                           "terminal).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete a run (or sweep) still marked running too (one "
                                                        "whose process, on another host, controlplane cannot tell "
                                                        "dead; if it is alive, its next writes fail).")] = False,
) -> None:
    """Delete runs and all their rows (requests, decisions, metric samples, worker events, iterations), one
    transaction a run; also the rows a run deleted with plain SQL left behind under its id. --sweep N deletes a
    sweep or search: its runs so, then its row. Every run is checked before any is deleted: one not there, or
    still running (without --force), deletes none. Their ids are not given to other runs."""
    if not run_ids and sweep is None:
        raise typer.BadParameter("give the ids of the runs to delete (`runs delete 16 17 --yes`), or --sweep N",
                                 param_hint="RUN")
    if run_ids and sweep is not None:
        raise typer.BadParameter("give run ids or --sweep N, not both", param_hint="--sweep")
    from controlplane.cli.common import resolve_db
    from controlplane.storage.orphans import delete_run, delete_sweep_row

    with user_errors():
        url = resolve_db(db)
    with user_errors(url):  # (a driver's error names the database: a read-only file's "attempt to write" did not)
        engine = open_stored_runs(url)
        try:
            sweep_row, ids = _sweep_plan(engine, sweep, force) if sweep is not None else (None, [])
            ids = ids if sweep is not None else list(dict.fromkeys(run_ids or []))
            plans = [_plan(engine, run_id, force) for run_id in ids]
            what = (_sweep_text(sweep, sweep_row, plans) if sweep is not None else
                    _planned_text(plans[0]) if len(plans) == 1 else _runs_text(plans))
            _ask(what, yes)
            deleted = []
            for p in plans:  # (one transaction a run: each line says one is gone, whatever comes after it)
                counts = delete_run(engine, p.run_id)
                deleted.append(counts)
                if len(plans) > 1 or sweep is not None:
                    out.print(f"deleted {_deleted_text(p.run_id, counts)}", highlight=False)
            if sweep is not None:
                delete_sweep_row(engine, sweep)
        finally:
            engine.dispose()
    if sweep is not None:
        kind = sweep_row["kind"] if sweep_row is not None else "sweep"
        out.print(f"deleted {kind} {sweep}" + (" (its row was gone)" if sweep_row is None else "")
                  + f", its {len(plans)} run{'s' if len(plans) != 1 else ''} and {_counts_text(_total(deleted))}",
                  highlight=False)
    elif len(plans) == 1:
        out.print(f"deleted {_deleted_text(plans[0].run_id, deleted[0])}", highlight=False)
    else:
        out.print(f"deleted {len(plans)} runs ({_ids_text(ids)}) and {_counts_text(_total(deleted))}", highlight=False)
    _sweeps_note([p for p in plans if p.run is not None] if sweep is None else [])


def _deleted_text(run_id: int, counts: dict[str, int]) -> str:
    return f"{'run ' + str(run_id) + ' and ' if counts['run'] else ''}{_counts_text(counts)}"


def _runs_text(plans: list[_Planned]) -> str:
    named = "; ".join(_planned_text(p) for p in plans[:_NAMED])
    more = f"; and {len(plans) - _NAMED} more runs" if len(plans) > _NAMED else ""
    return f"{len(plans)} runs: {named}{more}"


def _sweep_text(sweep_id: int, row: dict[str, Any] | None, plans: list[_Planned]) -> str:
    runs = f"{len(plans)} run{'s' if len(plans) != 1 else ''}"
    if plans:
        runs += f" ({_ids_text([p.run_id for p in plans])}) and {_counts_text(_total([p.counts for p in plans]))}"
    if row is None:
        return f"the {runs} of sweep {sweep_id} (its row is gone)"
    return f"{row['kind']} {sweep_id} ({row.get('name') or 'unnamed'}, {row['status']}), its {runs}"


def _sweeps_note(deleted: list[_Planned]) -> None:
    """Runs of a sweep deleted one by one: `runs sweeps` still lists their sweep, counting them among its runs."""
    sweeps = sorted({p.run["sweep_id"] for p in deleted if p.run and p.run.get("sweep_id") is not None})
    for sweep_id in sweeps:
        err.print(f"note: sweep {sweep_id} is still stored (`runs sweeps` counts the deleted runs among its runs): "
                  f"`controlplane runs delete --sweep {sweep_id} --yes` deletes it with the runs left of it",
                  highlight=False, markup=False)
