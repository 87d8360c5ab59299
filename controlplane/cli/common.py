"""Helpers the CLI commands share: consoles, error reporting, the database URL."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from controlplane.errors import ControlPlaneError
from controlplane.storage.errors import StorageError, database_error, mask_password

#: The two consoles, ``out`` (stdout) and ``err`` (stderr), are made on first use (module
#: ``__getattr__``): ``controlplane sim replay --json`` prints nothing through rich and so does
#: not import it. Modules on that path refer to them as ``common.out`` / ``common.err``.
_CONSOLES: dict[str, dict[str, Any]] = {"out": {}, "err": {"stderr": True}}
#: Width of a console whose stream is not a terminal (a pipe, a file) when ``COLUMNS`` is unset:
#: rich would wrap every table at 80 columns there, which folds a decision timeline's reasons and
#: signals into a column of a few letters per line. Messages on a stderr that is not a terminal
#: (a log, a pipe) are not wrapped at all (``soft_wrap``): a message is one line, and a command it
#: suggests is never split across two; tables still fit the width.
PIPE_WIDTH = 160


def _console_options(name: str) -> dict[str, Any]:
    options = dict(_CONSOLES[name])
    stream = sys.stderr if options.get("stderr") else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        terminal = False
    if not terminal and not os.environ.get("COLUMNS"):
        options["width"] = PIPE_WIDTH
    elif terminal and os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        import shutil

        size = shutil.get_terminal_size()  # (COLUMNS, else the terminal's: rich says 80 for a dumb one, and cut cells)
        options["width"], options["height"] = size.columns, size.lines
    if not terminal and options.get("stderr"):
        options["soft_wrap"] = True
    return options


def __getattr__(name: str) -> Any:
    if name in _CONSOLES:
        from rich.console import Console

        console = globals()[name] = Console(**_console_options(name))
        return console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def console(name: str) -> Any:
    """``out`` or ``err``, made now if it was not yet (this module's own code cannot rely on
    ``__getattr__``, which only answers lookups from outside)."""
    made = globals().get(name)
    return made if made is not None else __getattr__(name)


#: Set by the ``controlplane`` entry point (a process of its own): objects made while the
#: collector is paused are then frozen (``gc.freeze``), so no later collection walks them.
freeze_after_pause = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Run a block with the cyclic garbage collector paused: for a command's imports, which
    make a few hundred thousand long-lived objects (modules, classes, functions) and no
    garbage, so every collection there walks them for nothing (a tenth of the imports' time).
    In the ``controlplane`` process they are frozen afterwards (``freeze_after_pause``): else
    the first collection after the pause walks them all once more."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze_after_pause:
                from controlplane import gc_freeze

                gc_freeze.freeze()  # remembered: the replay's driver then does not count them
            gc.enable()


DB_OPTION_HELP = ("Database URL, or a SQLite file's path (default: $CONTROLPLANE_STORAGE__URL, else storage.url "
                  "of --config, else sqlite:///controlplane.db).")
#: ``--db`` of a command that takes no ``--config`` (one that reads stored runs, `db upgrade`).
DB_READ_HELP = ("Database URL, or a SQLite file's path (default: $CONTROLPLANE_STORAGE__URL, else "
                "sqlite:///controlplane.db).")


#: The options of `sim replay` and `live-replay` that set a trace transform, by the keyword the
#: transform's error names (``sim.traces.transforms.TransformValueError``): such an error names
#: the option the user typed (``--speed-up must be ...``), not the library's keyword.
TRANSFORM_OPTIONS: Mapping[str, str] = {
    "start_s": "--window-start", "end_s": "--window-end", "speed_up": "--speed-up", "repeat": "--repeat",
    "rate_scale": "--rate-scale", "copies": "--copies", "limit": "--limit", "prompt_scale": "--prompt-scale",
    "output_scale": "--output-scale", "max_prompt_tokens": "--max-prompt-tokens",
    "max_output_tokens": "--max-output-tokens",
}


@contextlib.contextmanager
def user_errors(db_url: str | None = None, *, options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Show expected errors (bad config, bad trace, missing run, a database that cannot be used, a file
    that cannot be read or written) as one clear line, exit 2. A database driver's error names
    ``db_url`` (password hidden) when given: the database the command uses. A trace transform's
    bad argument is named by its option in ``options`` (`TRANSFORM_OPTIONS`), when given."""
    try:
        yield
    except (ControlPlaneError, ValueError, LookupError, StorageError) as exc:
        text = str(exc)
        if options is not None and _transform_error(exc):
            text = named_by_options(exc, options)
        if isinstance(exc, StorageError):  # (one raised from a driver's error: that error's one line)
            text = f"database: {database_error(exc.__cause__, db_url) if _database_failure(exc.__cause__) else exc}"
        if isinstance(exc, StorageError) and exc.spill_path is not None and str(exc.spill_path) not in text:
            text += f" (rows not written were saved to {exc.spill_path})"
        _exit_with(text)
    except OSError as exc:  # a file the command reads or writes: a folder in the way, no permission, a full disk
        if isinstance(exc, BrokenPipeError):
            raise  # (`... | head`: typer ends the command quietly)
        _exit_with(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))
    except Exception as exc:
        if not _database_failure(exc):
            raise
        _exit_with(f"database: {database_error(exc, db_url)}")


def _transform_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a trace transform's bad argument (checked without importing the transforms)."""
    transforms = sys.modules.get("sim.traces.transforms")
    return transforms is not None and isinstance(exc, transforms.TransformValueError)


def named_by_options(exc: Any, options: Mapping[str, str] = TRANSFORM_OPTIONS) -> str:
    """A trace transform's bad argument (``TransformValueError``) named by the option that set it,
    its value as a command line gives it (``--speed-up ... got 0``, not the ``0.0`` it became)."""
    return exc.named(options, shown=lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else repr(v))


def _database_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is SQLAlchemy's wrapper of a database driver's error (an unreachable server,
    a file that is not a database): checked without importing SQLAlchemy where nothing did."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.DBAPIError)


def _exit_with(text: str) -> NoReturn:
    from rich.markup import escape

    # The message is text, not markup (a "[chat]" in it stays); one line however long, as logs and pipes read it.
    console("err").print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
    import typer  # (here: `controlplane sim replay` runs without typer, `controlplane.cli.replay_args`)

    raise typer.Exit(2) from None


def open_stored_runs(db: str | None) -> Any:
    """The engine of the database ``db`` (default: the config's), for a command that reads stored
    runs: a SQLite file that does not exist is an error naming it (rather than a new, empty
    database made by a typo in ``--db``), and a database that cannot be opened is one line. A
    SQLite file this user may not write (or whose folder it may not) is opened read-only; else
    runs of processes gone from this host are marked crashed first (`controlplane.storage.crashed`)."""
    from controlplane.storage import ensure_schema, make_engine
    from controlplane.storage.db import plain_sqlite_file, sqlite_read_only

    from controlplane.storage.url import sqlite_path_too_long

    url = resolve_db(db)
    path = plain_sqlite_file(url)
    if path is not None and (too_long := sqlite_path_too_long(path)) is not None:  # (before exists(): too long)
        raise StorageError(f"{mask_password(url)}: {too_long}")
    if path is not None and not path.exists():
        import shlex

        raise StorageError(f"{url}: no such file ({path}), so no run is stored there; check --db, or replay "
                           f"a trace into it first (`controlplane sim replay --db {shlex.quote(url)}`)")
    if path is not None and sqlite_read_only(path):
        return _open_read_only(url, path)
    engine = make_engine(url)
    try:
        _refuse_foreign(engine, url)
        ensure_schema(engine)
    except Exception as exc:
        from controlplane.storage.schema_upgrade import may_not_write

        if _database_failure(exc) and may_not_write(exc):  # (a read-only role; a SQLite file opened read-only)
            raise _cannot_upgrade(engine, url, exc) from None
        engine.dispose()
        if _database_failure(exc):
            raise database_error(exc, url) from None
        raise
    from controlplane.storage.crashed import mark_crashed_quietly

    mark_crashed_quietly(engine)
    return engine


def _refuse_foreign(engine: Any, url: str) -> None:
    """A database holding tables and no controlplane schema (a `--db` pointing at another application's file) is
    an error for a command that only reads runs: it added the schema's tables to it, and said "no runs stored"
    (or failed with "table run already exists"). A replay into it adds them, beside the others."""
    from sqlalchemy import inspect

    from controlplane.storage.db import recorded_revisions

    if recorded_revisions(engine):
        return
    tables = sorted(inspect(engine).get_table_names())
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        engine.dispose()
        raise StorageError(f"{mask_password(url)} holds tables ({shown}) but no controlplane schema, so no run is "
                           f"stored there; check --db, or replay a trace into it first (`controlplane sim replay "
                           f"--db URL`: its tables go beside these)")


def _cannot_upgrade(engine: Any, url: str, exc: BaseException) -> StorageError:
    """The schema needs upgrading and this role may not (PostgreSQL's ``permission denied``), or this SQLite
    connection may not write (``mode=ro``, a file this user may not write): say so. A role that may not read
    even ``alembic_version`` is told that, as `database_error` says it."""
    from controlplane.storage.db import SCHEMA_HEAD, recorded_revisions

    try:
        revisions = recorded_revisions(engine)
    except Exception as again:
        if not _database_failure(again):
            raise
        return database_error(exc, url)
    finally:
        engine.dispose()
    orig = getattr(exc, "orig", exc)
    why = f"{type(orig).__name__}: {str(orig).splitlines()[0]}"  # (not the statement's lines that follow)
    if engine.dialect.name == "sqlite":
        return StorageError(f"{mask_password(url)}: its schema is at revision {sorted(revisions) or 'none'}, not "
                            f"{SCHEMA_HEAD}, and this connection may not upgrade it ({why}: opened read-only, or this "
                            "user may not write the file or its folder); upgrade it once where it can be written "
                            "(`controlplane db upgrade --db FILE`, as a user who may write it)")
    return StorageError(f"{mask_password(url)}: its schema is at revision {sorted(revisions) or 'none'}, not "
                        f"{SCHEMA_HEAD}, and this role may not upgrade it ({why}); upgrade it once as a role that "
                        "owns its tables (`controlplane db upgrade --db URL`)")


def _open_read_only(url: str, path: Any) -> Any:
    """A read-only engine on the SQLite file ``path`` (nothing is written, not even its schema's
    upgrade: a schema not at head is an error saying so)."""
    from controlplane.storage import make_engine
    from controlplane.storage.db import SCHEMA_HEAD, read_only_sqlite_url, recorded_revisions, unreadable_wal

    engine = make_engine(read_only_sqlite_url(path))
    try:
        with engine.connect() as conn:  # (the driver's own error, if it cannot be read at all)
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        revisions = recorded_revisions(engine)
    except Exception as exc:
        engine.dispose()
        if _database_failure(exc) and unreadable_wal(path):
            raise StorageError(f"{url}: cannot be read read-only: its {path.name}-wal file holds writes not yet in "
                               f"{path.name}, and SQLite reads them only with a {path.name}-shm file, which it may not "
                               "make in this read-only folder; read it where the folder can be written (copy the file "
                               "with its -wal), or have a process that may write it open and close it once") from None
        if _database_failure(exc):
            raise StorageError(f"{url}: cannot be read read-only ({path} or its folder is not writable): "
                               f"{database_error(exc)}") from None
        raise
    if revisions != {SCHEMA_HEAD}:
        engine.dispose()
        raise StorageError(f"{url}: read-only here and its schema is at revision {sorted(revisions) or 'none'}, "
                           f"not {SCHEMA_HEAD}; upgrade it once where it can be written (`controlplane db upgrade`)")
    return engine


def resolve_db(url: str | None) -> str:
    """``--db`` as a database URL (a SQLite file's path is made one), else the configured one (``storage.url``
    from the environment, else its default)."""
    if url:
        from controlplane.storage.url import database_url

        return database_url(url)
    from controlplane.config_env import configured_storage_url

    return configured_storage_url()  # (the storage URL alone: another setting's bad variable is not this command's)


def default_db_url() -> str:
    """``storage.url``'s default (``sqlite:///controlplane.db``): where a command without ``--db`` looks."""
    from controlplane.config import StorageConfig

    return StorageConfig.model_fields["url"].default


def db_option(url: str, default: str) -> tuple[str, str]:
    """(`` --db URL`` for a command line that follows a run stored in ``url``, empty in the default
    database; a note to end the line with when the URL's password is shown as ``***``, else empty)."""
    if url == default:
        return "", ""
    import shlex

    shown = mask_password(url)  # (shell-quoted: a path with a space pasted as two arguments)
    return f" --db {shlex.quote(shown)}", (" (the password is shown as ***: put yours back)" if shown != url else "")


def fmt_value(v: object) -> str:
    """A value as the tables print it: floats to 4 significant digits, from 10,000 up as whole numbers with
    thousands separators (19,905 GPU-seconds, not 1.991e+04)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if 1e4 <= abs(v) < float("inf") else f"{v:.4g}"
    return str(v)


def say_replay_interrupted(exc: KeyboardInterrupt) -> None:
    """One line on stderr: which run Ctrl-C left, and what it holds (`controlplane.errors.ReplayInterrupted`)."""
    run_id = getattr(exc, "run_id", None)
    if run_id is None:
        console("err").print("interrupted before the run started: nothing was stored", highlight=False)
        return
    db, note = db_option(exc.db_url, default_db_url()) if getattr(exc, "db_url", None) else ("", "")
    summary = getattr(exc, "summary", None)
    by = (f" by {summary['interrupted_by']}" if summary is not None
          and summary.get("interrupted_by", "SIGINT") != "SIGINT" else "")  # (SIGTERM; Ctrl-C goes unsaid)
    if summary is not None and summary.get("interrupted_at_s") is not None:  # stopped cleanly, at a tick
        console("err").print(f"interrupted{by} at simulated second {summary['interrupted_at_s']:g}, after "
                             f"{exc.num_arrived:,} requests arrived: run {run_id} is stored with status 'interrupted', "
                             f"its {summary.get('num_in_flight', 0):,} requests still in the system recorded in "
                             f"flight (`controlplane runs show {run_id}{db}`{note})", highlight=False)
        return
    console("err").print(f"interrupted{by} after {exc.num_arrived:,} requests arrived: run {run_id} is stored with "
                         f"status 'interrupted' and the rows written until then (`controlplane runs show {run_id}{db}`"
                         f"{note})", highlight=False)


def working(text: str) -> Any:
    """A spinner with ``text`` on stderr while a long step runs, on a terminal (else nothing)."""
    err = console("err")
    return err.status(text) if err.is_terminal else contextlib.nullcontext()


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def caps_note(total: int, counts: dict[str, int], max_prompt_tokens: int | None, max_output_tokens: int | None,
              after: str) -> str:
    """``length caps: N of M prompts at --max-prompt-tokens X, ...`` for the caps given ('' with none):
    ``counts`` has the ``prompts`` / ``outputs`` at or over each cap; ``after`` ends the parenthesis."""
    parts = [f"{counts.get(what, 0):,} of {total:,} {what} at --{flag} {cap}"
             for what, flag, cap in (("prompts", "max-prompt-tokens", max_prompt_tokens),
                                     ("outputs", "max-output-tokens", max_output_tokens)) if cap is not None]
    return f"length caps: {', '.join(parts)} (cut there, or exactly that long; {after})" if parts else ""
