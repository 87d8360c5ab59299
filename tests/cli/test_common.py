"""Commands that read stored runs, with a PostgreSQL role that may only read (`open_stored_runs`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app, common
from controlplane.storage import upgrade
from controlplane.storage.db import SCHEMA_HEAD
from tests.storage.conftest import pg_admin, pg_reader, pg_url  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("wide_consoles")]




def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_read_only_role_reads_runs(pg_url, pg_reader, tmp_path):  # noqa: F811
    for seed in ("1", "2"):
        assert _cli("sim", "replay", "--limit", "30", "--seed", seed, "--db", pg_url).exit_code == 0
    reader = pg_reader(pg_url)
    for args in (["runs", "list"], ["runs", "show", "1"], ["runs", "compare", "1", "2"],
                 ["runs", "export", "2", "--what", "requests", "--format", "csv"],
                 ["runs", "report", "1", "--html", str(tmp_path / "r.html")]):
        result = _cli(*args, "--db", reader)
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert len(_cli("runs", "export", "2", "--what", "requests", "--format", "csv", "--db", reader)
               .stdout.splitlines()) == 1 + 30


def test_a_read_only_role_on_an_old_schema_is_told_who_must_upgrade_it(pg_url, pg_reader):  # noqa: F811
    upgrade(pg_url, "0002")
    reader = pg_reader(pg_url)
    result = _cli("runs", "list", "--db", reader)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1 and ":pw@" not in result.stderr
    assert (":***@127.0.0.1:5432/" in result.stderr and f"its schema is at revision ['0002'], not {SCHEMA_HEAD}, "
            "and this role may not upgrade it (InsufficientPrivilege: permission denied for schema public); upgrade "
            "it once as a role that owns its tables (`controlplane db upgrade --db URL`)") in result.stderr


def test_a_role_that_may_not_read_alembic_version_is_told_so(pg_url, pg_reader):  # noqa: F811
    """It was told the database "holds tables ... but no controlplane schema ... replay a trace into it first"."""
    from tests.storage.conftest import _as_owner

    upgrade(pg_url)
    reader = pg_reader(pg_url)
    from sqlalchemy.engine import make_url

    _as_owner(pg_url, f'REVOKE SELECT ON alembic_version FROM "{make_url(reader).username}"')
    result = _cli("runs", "list", "--db", reader)
    assert result.exit_code == 2, (result.output, result.exception)
    said = " ".join(result.stderr.split())
    assert "no controlplane schema" not in said and ":pw@" not in said
    assert (":***@127.0.0.1:5432/" in said and "InsufficientPrivilege: permission denied for table alembic_version "
            "(this role may not do that here" in said), said


def test_the_db_option_after_a_run_names_its_database_without_the_password():
    default = "sqlite:///controlplane.db"
    assert common.db_option(default, default) == ("", "")
    assert common.db_option("sqlite:///other.db", default) == (" --db sqlite:///other.db", "")
    option, note = common.db_option("postgresql+psycopg://me:Sekrit@db:5432/runs", default)
    assert option == " --db 'postgresql+psycopg://me:***@db:5432/runs'" and "Sekrit" not in option + note
    assert note == " (the password is shown as ***: put yours back)"


def test_a_console_on_a_pipe_is_wide_unless_columns_says_otherwise(monkeypatch):
    """Piped output (``runs show --timeline | less``) gets PIPE_WIDTH, not rich's 80 columns;
    ``COLUMNS`` still decides when set; a terminal keeps rich's own width."""
    import io

    from controlplane.cli import common

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert common._console_options("out")["width"] == common.PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert "width" not in common._console_options("out")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr("sys.stderr", Terminal())
    assert "width" not in common._console_options("err")
    # a dumb terminal: rich would say 80 whatever the terminal and COLUMNS say (cells came out cut)
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", "123")
    assert common._console_options("err")["width"] == 123


@pytest.mark.parametrize("columns", [None, "80"])
def test_messages_on_a_stderr_that_is_not_a_terminal_are_one_line(monkeypatch, columns):
    """A message of 300 characters (a suggested command in it) stays one line in a log or a pipe, with or
    without ``COLUMNS``; a table there still fits the console's width."""
    import io

    from rich.console import Console
    from rich.table import Table

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    err = Console(**common._console_options("err"))
    message = "warning: " + "word " * 55 + "then run `controlplane runs show 12 --db sqlite:////a/long/path/r.db`"
    err.print(message, highlight=False)
    assert err.file.getvalue() == message + "\n"
    t = Table("key", "value")
    t.add_row("reason", "word " * 100)
    err.file.truncate(0)
    err.file.seek(0)
    err.print(t)
    assert max(len(line) for line in err.file.getvalue().splitlines()) == err.width
