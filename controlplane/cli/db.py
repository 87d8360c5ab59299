"""`controlplane db ...`: schema migrations, and loading a spill file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.common import DB_READ_HELP, out, resolve_db, user_errors

app = typer.Typer(help="Database schema; spill files.", no_args_is_help=True)


@app.command()
def upgrade(
    db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None,
    revision: Annotated[str, typer.Option(help="Target revision (one the database is already past is an error: "
                                                "going back is Alembic's downgrade, whose command it gives).")]
    = "head",
) -> None:
    """Migrate the database schema (Alembic) to the latest revision; say which revisions it applied."""
    from controlplane.storage import make_engine
    from controlplane.storage import upgrade as do_upgrade
    from controlplane.storage.schema_upgrade import revisions_text

    from controlplane.cli.config_checks import check_database_folder

    url = resolve_db(db)
    with user_errors(url):  # (a driver's error names the database, as every command's does)
        check_database_folder(url)  # (a typo in --db's folder made the folders, and a database there)
        engine = make_engine(url)
        applied = do_upgrade(engine, revision)
    said = (f"{applied.line} (applied {', '.join(applied.revisions)})" if applied else
            f"{applied.url} was at revision {revisions_text(applied.after)} already: nothing to apply")
    out.print(f"{said}; database at revision {revisions_text(applied.after)}", highlight=False)


@app.command()
def current(db: Annotated[Optional[str], typer.Option("--db", help=DB_READ_HELP)] = None) -> None:
    """Show the database's schema revision, and whether it is behind this controlplane (what an upgrade
    would apply) or ahead of it, changing nothing (no upgrade, no file made). Exit status: 0 current or no
    schema yet, 1 behind (an upgrade would apply), 2 ahead (this controlplane refuses it) or not readable."""
    from controlplane.storage.db import SCHEMA_HEAD
    from controlplane.storage.schema_upgrade import schema_state

    url = resolve_db(db)
    with user_errors(url):
        engine = read_only_engine(url)
        try:
            state, text = schema_state(engine, SCHEMA_HEAD, url)
        finally:
            engine.dispose()
    out.print(text, highlight=False, soft_wrap=True)  # (one line, whole: a log keeps it, grep finds it)
    if state in ("behind", "ahead"):
        raise typer.Exit(1 if state == "behind" else 2)


def read_only_engine(url: str):
    """An engine that reads ``url`` and writes nothing: a SQLite file read-only, without the pragmas a
    controlplane connection sets (WAL mode is a write: refused in a file that is not in it yet); one that does
    not exist is an error, not a new file. Another database as it is (its reads wait for no upgrade's lock)."""
    from sqlalchemy import create_engine

    from controlplane.storage import make_engine
    from controlplane.storage.db import _parse_url, _sqlite_file, plain_sqlite_file, read_only_sqlite_url
    from controlplane.storage.errors import StorageError

    parsed = _parse_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.exists():
        raise StorageError(f"{url}: no such file ({path.absolute()}): no database there")
    plain = plain_sqlite_file(url)
    return create_engine(read_only_sqlite_url(plain)) if plain is not None else make_engine(url)


@app.command("load-spill")
def load_spill(
    file: Annotated[Path, typer.Argument(help="A controlplane-spill-run*.jsonl file (its run's error named it).", metavar="FILE")],
    db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: the one the file's header "
                                                           "names; give it where that URL's password is hidden). "
                                                           "Another database than the header's is refused; "
                                                           "another port of its host is taken (pgbouncer, a "
                                                           "port-forward).")]
    = None,
    same_database: Annotated[bool, typer.Option(
        "--same-database", help="--db reaches the header's database under another host name (a tunnel's "
                                "localhost:15432): take it; the runs there must still be the file's own.")] = False,
) -> None:
    """Write a spill file's rows to its database (the rows of a run whose database was away when it
    ended, its end among them: the run gets its rows, summary and status), then delete the file.
    Nothing is written, and the file is kept, where the database or its runs are not the file's own."""
    from controlplane.storage.errors import mask_password
    from controlplane.storage.load_spill import load_spill as load, spill_database

    if same_database and not db:
        raise typer.BadParameter("--same-database goes with --db (the URL that reaches the file's database)",
                                 param_hint="--same-database")
    with user_errors():
        url = spill_database(file, resolve_db(db) if db else None, same_database=same_database)
    with user_errors(url):
        written = load(url, file)
    out.print(f"{written:,} rows from {file} written to {mask_password(url)}; the file is deleted", highlight=False)
