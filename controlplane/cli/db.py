"""`controlplane db ...`: schema migrations."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.common import DB_OPTION_HELP, out, resolve_db, user_errors

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
def upgrade(
    db: Annotated[Optional[str], typer.Option("--db", help=DB_OPTION_HELP)] = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database schema (Alembic) to the latest revision."""
    from controlplane.storage import current_revisions, make_engine
    from controlplane.storage import upgrade as do_upgrade

    url = resolve_db(db)
    with user_errors(url):  # (a driver's error names the database, as every command's does)
        engine = make_engine(url)
        do_upgrade(engine, revision)
        out.print(f"database at revision {', '.join(sorted(current_revisions(engine))) or '-'}")
