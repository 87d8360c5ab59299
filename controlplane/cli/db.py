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
    """Migrate the database schema (Alembic) to the latest revision."""
    from controlplane.storage import current_revisions, make_engine
    from controlplane.storage import upgrade as do_upgrade

    from controlplane.cli.config_checks import check_database_folder

    url = resolve_db(db)
    with user_errors(url):  # (a driver's error names the database, as every command's does)
        check_database_folder(url)  # (a typo in --db's folder made the folders, and a database there)
        engine = make_engine(url)
        do_upgrade(engine, revision)
        out.print(f"database at revision {', '.join(sorted(current_revisions(engine))) or '-'}")


@app.command("load-spill")
def load_spill(
    file: Annotated[Path, typer.Argument(help="A controlplane-spill-run*.jsonl file (its run's error named it).")],
    db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: the one the file's header "
                                                           "names; give it where that URL's password is hidden). "
                                                           "Another database than the header's is refused.")]
    = None,
) -> None:
    """Write a spill file's rows to its database (the rows of a run whose database was away when it
    ended, its end among them: the run gets its rows, summary and status), then delete the file.
    Nothing is written, and the file is kept, where the database or its runs are not the file's own."""
    from controlplane.storage.errors import mask_password
    from controlplane.storage.load_spill import load_spill as load, spill_database

    with user_errors():
        url = spill_database(file, resolve_db(db) if db else None)
    with user_errors(url):
        written = load(url, file)
    out.print(f"{written:,} rows from {file} written to {mask_password(url)}; the file is deleted", highlight=False)
