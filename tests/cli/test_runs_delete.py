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


def test_runs_delete_takes_several_runs_checks_them_all_first_and_sums_up(tmp_path) -> None:
    """`runs delete 16 17 --yes` was refused (one id only)."""
    url = _db(tmp_path)
    missing = CliRunner().invoke(app, ["runs", "delete", "1", "5", "--db", url, "--yes"])
    assert missing.exit_code == 2 and "no run 5 and no rows of it" in missing.output
    assert len(_rows(url)) == 12  # (run 1 is not deleted either: each is checked before any goes)
    asked = CliRunner().invoke(app, ["runs", "delete", "1", "2", "--db", url], input="")
    assert asked.exit_code == 2 and "would delete 2 runs: run 1 (unit, finished) and 2 request" in " ".join(
        asked.output.split())
    done = CliRunner().invoke(app, ["runs", "delete", "1", "2", "1", "--db", url, "--yes"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines == ["deleted run 1 and 2 request, 2 decision", "deleted run 2 and 3 request, 3 decision",
                     "deleted 2 runs (1, 2) and 5 request, 5 decision"], lines
    assert _rows(url) == []


def test_runs_delete_sweep_deletes_its_runs_and_its_row(tmp_path) -> None:
    """`runs sweeps` listed 'finished 0/4' for a sweep whose runs were deleted one by one: no way to delete it."""
    import json

    from tests.cli.test_runs_list_filters import runs_db

    url = runs_db(tmp_path)  # (runs 2 and 3 of sweep 1, of 4 runs)
    one = CliRunner().invoke(app, ["runs", "delete", "2", "--db", url, "--yes"])
    assert one.exit_code == 0, one.output
    assert "note: sweep 1 is still stored" in one.stderr and "runs delete --sweep 1 --yes" in one.stderr
    done = CliRunner().invoke(app, ["runs", "delete", "--sweep", "1", "--db", url, "--yes"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == ["deleted run 3 and 1 request", "deleted grid 1, its 1 run and 1 request"]
    listed = CliRunner().invoke(app, ["runs", "sweeps", "--db", url, "--json"])
    assert json.loads(listed.stdout) == []
    runs = CliRunner().invoke(app, ["runs", "list", "--db", url, "--json"])
    assert [r["id"] for r in json.loads(runs.stdout)] == [5, 4, 1]  # (the other runs are kept)
    again = CliRunner().invoke(app, ["runs", "delete", "--sweep", "1", "--db", url, "--yes"])
    assert again.exit_code == 2 and "no sweep 1 and no run of it" in again.output
    neither = CliRunner().invoke(app, ["runs", "delete", "--db", url, "--yes"])
    assert neither.exit_code == 2 and "or --sweep N" in neither.output
    both = CliRunner().invoke(app, ["runs", "delete", "4", "--sweep", "1", "--db", url, "--yes"])
    assert both.exit_code == 2 and "not both" in both.output


def test_runs_delete_sweep_refuses_a_running_sweep_without_force(tmp_path) -> None:
    from tests.cli.test_runs_list_filters import runs_db

    url = runs_db(tmp_path)
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("UPDATE sweep SET status = 'running'")  # (no process in its spec: none this host can tell dead)
    con.commit()
    con.close()
    refused = CliRunner().invoke(app, ["runs", "delete", "--sweep", "1", "--db", url, "--yes"])
    assert refused.exit_code == 2 and "grid 1 is still running" in refused.output
    done = CliRunner().invoke(app, ["runs", "delete", "--sweep", "1", "--db", url, "--yes", "--force"])
    assert done.exit_code == 0 and "deleted grid 1, its 2 runs and 2 request" in done.output, done.output
