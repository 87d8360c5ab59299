"""Load a spill file into its database: ``controlplane db load-spill FILE [--db URL]`` (or
``python -m controlplane.storage.load_spill``, without the CLI's imports).

A spill file holds rows a recorder could not write (the database was away when its run ended,
`controlplane.storage.recorder`), the update that finishes the run among them: loading it writes
them, so a run left ``running`` (or marked ``crashed`` meanwhile) gets its rows, its summary and
its status. ``--db`` defaults to the database the file names in its header (where that URL has no
hidden password); one given must be that database (its URL may be spelt otherwise: another user, a
password, ``localhost`` for ``127.0.0.1``, another port of that host, as pgbouncer's or a port-forward's;
`controlplane.storage.identity`; ``--same-database`` says a URL of another host reaches it, as a tunnel's
``localhost:15432`` does), and the runs there must be the file's own (their names and starts, whatever the
URL): else nothing is written and the file is kept, checked before
the schema is made or upgraded (a database made anew, empty, gets none). The file
is deleted once its rows are written, as the recorder deletes the spill files it writes back itself:
loading it twice would write its rows twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from controlplane.storage import spill
from controlplane.storage.errors import StorageError, mask_password

__all__ = ["load_spill", "main", "spill_database"]


def load_spill(url: str, path: str | Path) -> int:
    """Write the spill file ``path``'s rows to ``url``'s database and delete the file; return how
    many rows were written (``StorageError`` when they were not: the file is then kept)."""
    from controlplane.storage.db import ensure_schema, make_engine, plain_sqlite_file
    from controlplane.storage.recorder import RunRecorder

    path = Path(path)
    run_ids = _run_ids(path)
    sqlite_file = plain_sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():  # (made by the engine's first connection: not here)
        raise StorageError(f"{path} holds rows of run(s) {sorted(run_ids)}, and {mask_password(url)} does not exist "
                           f"({sqlite_file}): nothing was written, and the file is kept; load it into the database "
                           "whose runs it holds")
    engine = make_engine(url)
    try:
        _check_runs_there(engine, path, run_ids, url)  # before the schema is made or upgraded: a database made
        ensure_schema(engine)  # anew got the whole schema, then the refusal
        recorder = RunRecorder(engine, close_wait_s=0)
        # (a failure leaves the recorder unclosed: its close would spill the rows to a second file)
        written = recorder.replay_spill(path)
        recorder.close()
    finally:
        engine.dispose()
    path.unlink(missing_ok=True)
    return written


def _run_ids(path: Path) -> set[int]:
    """The runs whose rows the spill file ``path`` holds (its header checked)."""
    return {row["id"] if table == spill.RUN_UPDATE else row["run_id"] for table, row, _ in spill.read_entries(path)}


def _check_runs_there(engine: Any, path: Path, run_ids: set[int], url: str) -> None:
    """Refuse (`StorageError`, nothing written, no schema made) a database that lacks the file's runs: one without
    controlplane's schema (an empty database, made anew under its name), one without a run of each id, or whose
    runs of those ids are others than the file's (`other_runs`). `RunRecorder.replay_spill` checks again."""
    from sqlalchemy import bindparam, text

    from controlplane.storage.db import recorded_revisions
    from controlplane.storage.recorder_spills import other_runs

    if not recorded_revisions(engine):
        raise StorageError(f"{path} holds rows of run(s) {sorted(run_ids)}, and {mask_password(url)} holds no "
                           "controlplane runs (no schema: a database made anew, or another one?): nothing was written "
                           "(nor any schema made), and the file is kept; load it into the database whose runs it holds")
    if not run_ids:
        return
    query = text("SELECT id, name, started_at FROM run WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
    with engine.connect() as conn:
        stored = {row.id: (row.name, row.started_at) for row in conn.execute(query, {"ids": sorted(run_ids)})}
    missing = run_ids - stored.keys()
    if missing:
        raise StorageError(f"{path} holds rows of run(s) {sorted(missing)}, not present in {mask_password(url)}: "
                           "nothing was written, and the file is kept")
    others = other_runs(spill.read_header(path), stored)
    if others:
        raise StorageError(f"{path} holds rows of {'; '.join(others)} in {mask_password(url)}: they are other runs "
                           "with the same ids (another database, or this one made anew?), so nothing was written; "
                           "load the file into the database whose runs it holds")


def spill_database(path: Path, db: str | None, *, same_database: bool = False) -> str:
    """The database to load ``path`` into: ``db``, else the one its header names (not one with a hidden
    password). A ``db`` that is another database than the header's (another host or database name; another port
    of the same host is taken) is refused (``StorageError``), unless ``same_database`` says it is that database
    (reached through a tunnel of another host name). `load_spill` checks the runs there all the same."""
    header = spill.read_header(path)
    source = header.get("source")
    if db is not None:
        if not same_database:
            _check_same_database(path, header, db)
        return db
    if not isinstance(source, str) or "***" in source:
        raise StorageError(f"{path} names no database this can connect to ({source!r}): give --db URL")
    return source


def _check_same_database(path: Path, header: dict, db: str) -> None:
    from controlplane.storage.identity import database_identity, without_port

    source = header.get("source")
    if not isinstance(source, str):
        return  # (a header without its database: nothing to compare)
    own = header.get("database") if isinstance(header.get("database"), str) else database_identity(source)
    given = database_identity(db)
    if given != own and without_port(given) != without_port(own):  # (another port of its host: pgbouncer's)
        raise StorageError(f"{path} holds rows of the database {mask_password(source)}, and --db names another one "
                           f"({mask_password(db)}): nothing was written, and the file is kept; give --db the URL "
                           "of its own database (with its password, where that is hidden; any port of its host), "
                           "or add --same-database where this URL reaches it under another host name (a tunnel)")


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when the rows are written, 2 (one line on stderr) when not."""
    parser = argparse.ArgumentParser(prog="python -m controlplane.storage.load_spill",
                                     description="Write a spill file's rows to its database, then delete the file.")
    parser.add_argument("file", type=Path, help="a controlplane-spill-run*.jsonl file")
    parser.add_argument("--db", help="the database URL (default: the one in the file's header)")
    parser.add_argument("--same-database", action="store_true",
                        help="--db reaches the header's database under another host name (a tunnel)")
    args = parser.parse_args(argv)
    url = args.db
    try:
        url = spill_database(args.file, args.db, same_database=args.same_database)
        written = load_spill(url, args.file)
    except (StorageError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a driver's error (the database still away): one line, no traceback
        from controlplane.storage.errors import database_error

        print(f"error: {database_error(exc, url)}", file=sys.stderr)
        return 2
    print(f"{written} rows from {args.file} written to {mask_password(url)}; the file is deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
