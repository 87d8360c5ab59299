"""`controlplane db upgrade`: a revision it does not know, and a database newer than the code, are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import current_revisions, head_revisions, make_engine, upgrade
from controlplane.storage.db import describe_url
from tests.storage.conftest import db_url, pg_admin, pg_reader, pg_url, sqlite_url  # noqa: F401 (fixtures)


pytestmark = pytest.mark.usefixtures("wide_consoles")


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_an_unknown_target_revision_is_one_line(db_url):  # noqa: F811
    result = _cli("db", "upgrade", "--db", db_url, "--revision", "0009")
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "to '0009': Can't locate revision identified by '0009'; its migrations are 0001, 0002, " in result.stderr


def test_a_database_newer_than_the_code_says_to_upgrade_controlplane(db_url):  # noqa: F811
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    result = _cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1
    assert (f"is at revision 0999, ahead of this controlplane (its latest is {', '.join(sorted(head_revisions()))}; "
            "0999 unknown to it): a newer controlplane upgraded it, and this one refuses it; upgrade controlplane"
            in result.stderr)
    assert "['" not in result.stderr and "database: database" not in result.stderr


def test_an_older_database_is_upgraded(db_url):  # noqa: F811
    upgrade(db_url, "0001")
    result = _cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert f"database at revision {', '.join(sorted(head_revisions()))}" in result.stdout


def test_db_upgrade_says_which_revisions_it_applied_or_that_it_had_none_to(db_url):  # noqa: F811
    """It said "database at revision 0005" whether it had upgraded the database or found it there."""
    upgrade(db_url, "0003")
    shown = make_engine(db_url)
    url = describe_url(shown)
    shown.dispose()
    result = _cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert " ".join(result.stdout.split()) == (f"upgraded the schema of {url} from 0003 to 0005 (applied 0004, 0005); "
                                               "database at revision 0005")
    again = _cli("db", "upgrade", "--db", db_url)
    assert " ".join(again.stdout.split()) == (f"{url} was at revision 0005 already: nothing to apply; database at "
                                              "revision 0005")


def test_db_current_says_where_the_schema_stands_and_changes_nothing(db_url):  # noqa: F811
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # (an empty file: one that is not there is an error)
    said = " ".join(_cli("db", "current", "--db", db_url).stdout.split())
    assert said == (f"{db_url}: no controlplane schema (no alembic_version table): the first command that opens it (a "
                    "replay, `runs list`, `db upgrade`: any but `db current`) makes the schema at revision 0005")
    upgrade(db_url, "0003")
    result = _cli("db", "current", "--db", db_url)
    assert result.exit_code == 1, result.output  # (behind: an upgrade would apply)
    assert " ".join(result.stdout.split()) == (
        f"{db_url}: revision 0003, behind this controlplane's 0005: an upgrade applies 0004, 0005 (`controlplane db "
        "upgrade`, or any command that opens it, does it in place; releases older than this one then refuse it)")
    engine = make_engine(db_url)
    assert current_revisions(engine) == {"0003"}
    upgrade(engine)
    result = _cli("db", "current", "--db", db_url)
    assert result.exit_code == 0 and result.stdout.strip() == (  # (one line: a log keeps it whole, grep finds it)
        f"{db_url}: revision 0005, this controlplane's latest: nothing to upgrade")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    result = _cli("db", "current", "--db", db_url)
    assert result.exit_code == 2  # (ahead: this controlplane refuses it)
    assert " ".join(result.stdout.split()) == (
        f"{db_url}: revision 0999, ahead of this controlplane (its latest is 0005): a newer controlplane upgraded it, "
        "and this one refuses it; upgrade controlplane")


def test_db_current_makes_no_file(tmp_path):
    target = tmp_path / "none" / "runs.db"
    result = _cli("db", "current", "--db", str(target))
    assert result.exit_code == 2 and f"no such file ({target})" in result.stderr, result.output
    assert not target.parent.exists()


def test_db_current_reads_a_file_in_a_read_only_url(tmp_path):
    path = tmp_path / "runs.db"
    upgrade(str(path), "0004")
    result = _cli("db", "current", "--db", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert result.exit_code == 1 and ": revision 0004, behind this controlplane's 0005" in result.stdout, result.output


def test_a_target_revision_the_database_is_past_is_an_error_naming_the_downgrade(db_url):  # noqa: F811
    """It printed "database at revision 0004", rc 0, as if it had gone back to 0002."""
    upgrade(db_url)
    result = _cli("db", "upgrade", "--db", db_url, "--revision", "0002")
    assert result.exit_code == 2, (result.output, result.exception)
    said = " ".join(result.stderr.split())
    ini = Path(__file__).resolve().parents[2] / "alembic.ini"
    assert (f"is at revision {', '.join(sorted(head_revisions()))}, already past '0002': an upgrade does not go back"
            in said and f"(from any folder): `alembic -c {ini} -x url={db_url} downgrade 0002`" in said), said
    again = _cli("db", "upgrade", "--db", db_url, "--revision", sorted(head_revisions())[0])
    assert again.exit_code == 0 and "database at revision" in again.stdout  # (the revision it is at: nothing to do)


def test_the_downgrade_command_names_a_relative_sqlite_path_absolutely(tmp_path, monkeypatch):
    """`--db upg/v03.db` gave `alembic -x url=sqlite:///upg/v03.db downgrade 0004`, "from the source checkout": run
    there, it worked on a new, empty upg/v03.db of the checkout."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "upg").mkdir()
    upgrade("upg/v03.db")
    said = " ".join(_cli("db", "upgrade", "--db", "upg/v03.db", "--revision", "0004").stderr.split())
    assert f"-x url=sqlite:///{tmp_path / 'upg' / 'v03.db'} downgrade 0004`" in said, said


@pytest.mark.parametrize("target", ["base", "0001@base"])
def test_base_is_a_revision_every_migrated_database_is_past(db_url, target):  # noqa: F811
    """`--revision base` on a database at head printed "database at revision 0005", rc 0, having done nothing
    (Alembic resolves base to no revision, which the past-revision check skipped), while `0004` was an error."""
    upgrade(db_url)
    result = _cli("db", "upgrade", "--db", db_url, "--revision", target)
    assert result.exit_code == 2, (result.output, result.exception)
    said = " ".join(result.stderr.split())
    assert (f"is at revision {', '.join(sorted(head_revisions()))}, already past {target!r}: an upgrade does not go "
            f"back" in said and f"downgrade {target}`" in said), said


def test_a_revision_past_head_is_one_line(db_url):  # noqa: F811
    """`--revision head+1` was Alembic's AssertionError traceback, on a new database as on a migrated one."""
    for _ in range(2):
        result = _cli("db", "upgrade", "--db", db_url, "--revision", "head+1")
        assert result.exit_code == 2 and "Traceback" not in result.output, (result.output, result.exception)
        assert "to 'head+1': Can't locate revision identified by 'head+1'; its migrations are 0001, " in result.stderr
        upgrade(db_url)


def test_a_database_the_upgrade_cannot_use_is_named():
    """Its driver error (a role PostgreSQL does not have, a role without rights) came without the URL."""
    url = "postgresql+psycopg://nobody-here@127.0.0.1:5432/nothing"
    result = _cli("db", "upgrade", "--db", url)
    assert result.exit_code == 2 and f"error: database: {url}: OperationalError:" in result.stderr, result.stderr


@pytest.mark.postgres
def test_a_role_that_may_not_create_tables_is_told_what_to_use(pg_url, pg_reader):  # noqa: F811
    result = _cli("db", "upgrade", "--db", pg_reader(pg_url))
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.count("\n") == 1 and "LINE" not in result.stderr and ":pw@" not in result.stderr
    assert ("InsufficientPrivilege: permission denied for schema public (this role may not do that here: use a role "
            "that owns the schema's tables, or grant it the privilege)") in result.stderr


def test_load_spill_writes_a_spilled_run_s_rows_and_end_and_deletes_the_file(tmp_path):
    """`controlplane db load-spill FILE`: the command a spilled run's error and crash note name."""
    from controlplane.storage import get_run
    from tests.storage.test_crashed import _spilled_run

    engine, run_id, spill = _spilled_run(tmp_path)
    result = _cli("db", "load-spill", str(spill))
    assert result.exit_code == 0, result.output
    assert f"rows from {spill} written to sqlite:///" in " ".join(result.output.split())
    run = get_run(engine, run_id)
    assert run["status"] == "finished" and not spill.exists()
    missing = _cli("db", "load-spill", str(spill))
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    engine.dispose()


def test_runs_show_says_a_spilled_run_ended_while_the_database_was_away(tmp_path):
    """It said "its process was gone ... (it never finished)" of a run whose end is in a spill file."""
    from controlplane.storage.crashed import mark_crashed_runs
    from tests.storage.test_crashed import _spilled_run

    engine, run_id, spill = _spilled_run(tmp_path)
    mark_crashed_runs(engine)
    url = str(engine.url)
    engine.dispose()
    shown = " ".join(_cli("runs", "show", str(run_id), "--db", url).output.split())
    assert "ended while the database was away" in shown and "never finished" not in shown
    assert shown.count(f"{spill}") == 2 and "controlplane db load-spill" in shown  # (where it is, and the command)


def test_upgrade_into_a_folder_that_does_not_exist_is_refused_and_makes_none(tmp_path):
    """`db upgrade --db /tmp/nofolder/x.db` made the folder and a database in it; runs refuse it ("no such folder")."""
    target = tmp_path / "nofolder" / "x.db"
    result = _cli("db", "upgrade", "--db", str(target))
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"{target.parent}: no such folder" in " ".join(result.stderr.split())
    assert not target.parent.exists()


def test_the_replay_a_missing_database_suggests_is_shell_quoted(tmp_path):
    """`runs list --db "no dir/x.db"` suggested `controlplane sim replay --db sqlite:///no dir/x.db`: pasted,
    two arguments."""
    import shlex

    target = tmp_path / "no dir" / "it's.db"
    result = _cli("runs", "list", "--db", str(target))
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    suggested = said[said.index("(`") + 2:said.rindex("`)")]
    assert suggested == f"controlplane sim replay --db {shlex.quote(f'sqlite:///{target}')}"
    assert shlex.split(suggested)[-1] == f"sqlite:///{target}"


def test_with_schema_upgrades_off_no_command_upgrades_a_database_behind_it(db_url, monkeypatch):  # noqa: F811
    """A team's shared database read by a newer release's `runs list` was upgraded, and the older release's jobs
    writing to it were refused from then on: CONTROLPLANE_SCHEMA_UPGRADE=never leaves that to `db upgrade`."""
    upgrade(db_url, "0003")
    monkeypatch.setenv("CONTROLPLANE_SCHEMA_UPGRADE", "never")
    for args in (("runs", "list"), ("sim", "replay", "--limit", "5")):
        res = _cli(*args, "--db", db_url)
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "is at revision 0003, behind this controlplane's 0005, and " \
            "CONTROLPLANE_SCHEMA_UPGRADE=never: nothing was changed" in said, said
        assert current_revisions(make_engine(db_url)) == {"0003"}
    said = " ".join(_cli("db", "current", "--db", db_url).stdout.split())  # (it says who upgrades now)
    assert "(`controlplane db upgrade` does it in place (other commands refuse it: CONTROLPLANE_SCHEMA_UPGRADE=never)" \
        in said and "any command that opens it" not in said, said
    assert _cli("db", "upgrade", "--db", db_url).exit_code == 0  # (the explicit upgrade is the way)
    assert _cli("runs", "list", "--db", db_url).exit_code == 0
    monkeypatch.setenv("CONTROLPLANE_SCHEMA_UPGRADE", "sometimes")
    bad = _cli("runs", "list", "--db", db_url)
    assert bad.exit_code == 2 and "CONTROLPLANE_SCHEMA_UPGRADE='sometimes': give auto" in " ".join(bad.output.split())


def test_with_schema_upgrades_off_a_new_database_still_gets_its_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_SCHEMA_UPGRADE", "never")
    res = _cli("sim", "replay", "--limit", "5", "--db", f"sqlite:///{tmp_path / 'new.db'}")
    assert res.exit_code == 0, res.output
