"""`controlplane runs copy RUN... --db SOURCE --to TARGET`: copy runs with all their rows into another database.

`runs compare`, `runs show` and the rest read one database; a candidate replayed into a CI job's SQLite file is
compared against a baseline kept in a shared PostgreSQL database by copying one of them beside the other first
(`controlplane.storage.copy_runs`).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, err, open_stored_runs, out, resolve_db, user_errors


def copied_line(run: dict) -> str | None:
    """`runs show`'s line for a copied run: ``copied from run 7 of postgresql+psycopg://ci:***@db/runs (sweep 2,
    point lr=0.1)``; None for a run made where it is stored."""
    from controlplane.storage.copy_runs import copied_from

    origin = copied_from(run)
    if origin is None:
        return None
    sweep = (f" (sweep {origin['sweep_id']}, point {origin.get('sweep_key')})" if origin.get("sweep_id") is not None
             else "")
    return f"copied from run {origin.get('run_id')} of {origin.get('database')}{sweep}"


def _rows_text(rows: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {table}" for table, n in rows.items() if table != "run" and n) or "no other rows"


def _open_target(url: str):
    from controlplane.storage import ensure_schema, make_engine

    engine = make_engine(url)
    try:
        ensure_schema(engine)  # (a new SQLite file gets the schema; an older one is upgraded, saying so)
    except BaseException:
        engine.dispose()
        raise
    return engine


def copy(
    run_ids: Annotated[list[int], typer.Argument(help="The runs' ids in the source database (`runs list`).",
                                                 metavar="RUN")],
    to: Annotated[str, typer.Option("--to", help="The database to copy them into: a URL or a SQLite file's path "
                                                 "(a new file is made, with the schema; its folder must exist).",
                                    show_default=False)],
    db: Annotated[Optional[str], typer.Option("--db", help="The source. " + DB_READ_HELP)] = None,
    again: Annotated[bool, typer.Option("--again", help="Copy a run the target holds a copy of already (by default "
                                                        "it is skipped, saying so: a copy run again after a failure "
                                                        "copies only what is missing).")] = False,
) -> None:
    """Copy runs, each with every row of it (requests, decisions, metric samples, worker events, iterations), into
    another database: one transaction per run, so a failed copy leaves nothing of that run there. Every run is
    checked (in the source, ended) before any is copied. A copy gets the target's next id and says which run of
    which database it came from (`runs show`); a run the target holds a copy of already is skipped (--again copies
    it again); a run of a sweep is copied without its sweep. Then `runs compare`, `runs show`, exports and
    `calibrate` read it in the target. A run still running is refused."""
    from controlplane.cli.config_checks import check_database_folder
    from controlplane.storage.copy_runs import check_copyable, copy_run, earlier_copies
    from controlplane.storage.errors import mask_password

    wanted = list(dict.fromkeys(run_ids))  # (a run named twice is copied once)
    with user_errors():
        source_url, target_url = resolve_db(db), resolve_db(to)
    with user_errors(source_url):
        source = open_stored_runs(source_url)
    try:
        with user_errors(source_url):  # (all of them before any is copied: not a part, then an error)
            check_copyable(source, target_url, wanted)
        with user_errors(target_url):
            check_database_folder(target_url)  # (a typo in --to's folder is an error, not a tree of new folders)
            target = _open_target(target_url)
        try:
            with user_errors(target_url):
                before = {} if again else earlier_copies(source, target)
            copied = []
            for run_id in wanted:
                if run_id in before:
                    err.print(f"run {run_id} is in {mask_password(target_url)} already, as run {before[run_id]} "
                              "(copied before): skipped; --again copies it again", highlight=False, soft_wrap=True)
                    continue
                with user_errors(target_url):
                    done = copy_run(source, target, run_id)
                copied.append(done)
                out.print(f"copied run {done.source_id} -> run {done.target_id} ({_rows_text(done.rows)})",
                          highlight=False, soft_wrap=True)
        finally:
            target.dispose()
    finally:
        source.dispose()
    if len(copied) > 1:
        err.print(f"copied {len(copied)} runs into {mask_password(target_url)}", highlight=False, soft_wrap=True)
