"""`controlplane runs list --sweep N --name TEXT --limit 0` (and `runs sweeps --limit 0`): the runs of a sweep, those
whose name holds a text, and all of them."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import RunRecorder, make_engine, upgrade
from tests.storage.support import FINISHED, request_row, start_run

NAMES = ("baseline", "cand1", "Cand2", "cand3", "other")


def runs_db(tmp_path, names=NAMES, sweep_runs=(2, 3)) -> str:
    """Runs 1.. named ``names``, each with one request; ``sweep_runs`` of sweep 1 (a grid of 4 runs, finished)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        for name in names:
            run_id = start_run(rec, name=name)
            rec.add_request(request_row(run_id))
            rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    engine.dispose()
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("INSERT INTO sweep (name, kind, status, spec, spec_hash, num_runs, created_at) "
                "VALUES ('grid', 'grid', 'finished', '{}', 'h', 4, '2025-06-01 08:00:00')")
    con.executemany("UPDATE run SET sweep_id = 1, sweep_key = ? WHERE id = ?", [(f"k{i}", i) for i in sweep_runs])
    con.commit()
    con.close()
    return url


def _ids(*args: str) -> list[int]:
    res = CliRunner().invoke(app, ["runs", "list", *args, "--json"])
    assert res.exit_code == 0, res.output
    return [r["id"] for r in json.loads(res.output)]


def test_runs_list_filters_by_sweep_and_by_name_and_limit_0_lists_all(tmp_path) -> None:
    url = runs_db(tmp_path)
    assert _ids("--db", url, "--sweep", "1") == [3, 2]
    assert _ids("--db", url, "--name", "CAND") == [4, 3, 2]  # (a substring, any case)
    assert _ids("--db", url, "--name", "cand", "--limit", "2") == [4, 3]  # (the newest 2 of those named so)
    assert _ids("--db", url, "--name", "cand", "--sweep", "1", "--status", "finished") == [3, 2]
    assert _ids("--db", url, "--limit", "2") == [5, 4]  # (the existing options as they were)
    assert _ids("--db", url, "--limit", "0") == [5, 4, 3, 2, 1]
    none = CliRunner().invoke(app, ["runs", "list", "--db", url, "--name", "nope", "--sweep", "1"])
    assert none.exit_code == 0 and "no runs of sweep 1 named *nope* stored" in none.output
    missing = CliRunner().invoke(app, ["runs", "list", "--db", url, "--sweep", "7"])
    assert missing.exit_code == 2 and "sweep 7 not found" in missing.output


def test_runs_sweeps_limit_0_lists_all(tmp_path) -> None:
    url = runs_db(tmp_path)
    res = CliRunner().invoke(app, ["runs", "sweeps", "--db", url, "--limit", "0", "--json"])
    assert res.exit_code == 0, res.output
    assert [s["id"] for s in json.loads(res.output)] == [1]
