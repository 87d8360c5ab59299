"""`controlplane runs delete RUN --yes`: a run and all its rows go, and rows a plain-SQL delete left behind too."""

from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import RunRecorder, make_engine, upgrade
from tests.storage.support import FINISHED, decision_row, request_row, start_run


def _db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        for n in (2, 3):
            run_id = start_run(rec)
            for i in range(n):
                rec.add_request(request_row(i))
                rec.add_decision(decision_row(i))
            rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    engine.dispose()
    return url


def _rows(url: str) -> list:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return con.execute("SELECT 'run', id FROM run UNION ALL SELECT 'request', run_id FROM request "
                           "UNION ALL SELECT 'decision', run_id FROM decision").fetchall()
    finally:
        con.close()


def test_runs_delete_asks_for_yes_then_deletes_the_run_and_its_rows(tmp_path) -> None:
    url = _db(tmp_path)
    asked = CliRunner().invoke(app, ["runs", "delete", "2", "--db", url], input="")
    assert asked.exit_code != 0 and len(_rows(url)) == 12  # nothing deleted without --yes (or a terminal's yes)
    done = CliRunner().invoke(app, ["runs", "delete", "2", "--db", url, "--yes"])
    assert done.exit_code == 0, done.output
    assert "deleted run 2 and 3 request, 3 decision" in done.output
    assert sorted(set(_rows(url))) == [("decision", 1), ("request", 1), ("run", 1)]
    again = CliRunner().invoke(app, ["runs", "delete", "2", "--db", url, "--yes"])
    assert again.exit_code == 2 and "no run 2 and no rows of it" in again.output


def test_runs_delete_refuses_a_run_still_running_without_force(tmp_path) -> None:
    url = _db(tmp_path)
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("UPDATE run SET status = 'running' WHERE id = 1")
    con.commit()
    con.close()
    refused = CliRunner().invoke(app, ["runs", "delete", "1", "--db", url, "--yes"])
    assert refused.exit_code == 2 and "run 1 is still running" in refused.output and len(_rows(url)) == 12
    done = CliRunner().invoke(app, ["runs", "delete", "1", "--db", url, "--yes", "--force"])
    assert done.exit_code == 0, done.output
    assert sorted(set(_rows(url))) == [("decision", 2), ("request", 2), ("run", 2)]


def test_runs_delete_removes_the_rows_a_plain_sql_delete_left_behind(tmp_path) -> None:
    url = _db(tmp_path)
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("DELETE FROM run WHERE id = 2")  # (no foreign-key pragma: its rows stay)
    con.commit()
    con.close()
    done = CliRunner().invoke(app, ["runs", "delete", "2", "--db", url, "-y"])
    assert done.exit_code == 0, done.output
    assert "deleted 3 request, 3 decision" in done.output
    assert sorted(set(_rows(url))) == [("decision", 1), ("request", 1), ("run", 1)]


def test_runs_delete_on_a_read_only_file_names_the_database(tmp_path) -> None:
    """It said `error: database: OperationalError: attempt to write a readonly database`, naming no database."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.storage.test_db import _as_unprivileged

    url = _db(tmp_path)
    path = Path(url.removeprefix("sqlite:///"))
    path.chmod(0o444)
    try:
        done = subprocess.run(_as_unprivileged([sys.executable, "-m", "controlplane.cli", "runs", "delete", "2",
                                                "--db", url, "--yes"]), capture_output=True, text=True, timeout=120)
    finally:
        path.chmod(0o644)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (f"error: database: {url}: OperationalError: attempt to write a readonly database "
                                   "(this user may not write the file, or its folder)"), done.stderr
    assert len(_rows(url)) == 12  # nothing deleted
