"""`controlplane runs copy`: a run with all its rows copied into another database (SQLite and PostgreSQL, real),
read there as the original is read, in one transaction; where it came from kept in its notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

from controlplane.compare import compare_runs
from controlplane.storage import get_run, make_engine, upgrade
from controlplane.storage import models
from controlplane.storage.copy_runs import copied_from, copy_run
from controlplane.storage.errors import StorageError
from controlplane.storage.orphans import CHILD_TABLES
from controlplane.testing import make_config
from tests.fixtures.common import azure_head


def _replayed(url: str, n: int, seed: int = 0) -> int:
    from sim.replay import replay

    return replay(azure_head(n), make_config(seed=seed, storage={"url": url})).run_id


def _iterations(engine, run_id: int, n: int) -> None:
    rows = [dict(run_id=run_id, worker_id="w0", batch_id=i, start_s=i * 0.1, end_s=i * 0.1 + 0.05,
                 num_prefill_tokens=16, num_prefill_seqs=1, num_decode_seqs=i % 4, sum_decode_context=40 * (i % 4),
                 sum_prefill_context=16, iteration_s=0.04) for i in range(n)]
    with engine.begin() as conn:
        conn.execute(models.iteration.insert(), rows)


def _rows(engine, table: str, run_id: int) -> list[dict]:
    t = models.metadata.tables[table]
    with engine.connect() as conn:
        got = conn.execute(select(t).where(t.c.run_id == run_id).order_by(t.c.id)).mappings().all()
    return [{k: v for k, v in r.items() if k not in ("id", "run_id")} for r in got]


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(models.metadata.tables[t])).scalar_one()
                for t in ("run", *CHILD_TABLES)}


@pytest.fixture
def source(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'candidate.db'}"
    run_id = _replayed(url, 120)
    engine = make_engine(url)
    _iterations(engine, run_id, 30)
    yield engine, run_id
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_copy_holds_every_row_of_the_run_and_says_where_it_came_from(source, tmp_path, kind, request):
    engine, run_id = source
    url = request.getfixturevalue("pg_url") if kind == "postgresql" else f"sqlite:///{tmp_path / 'baseline.db'}"
    baseline = _replayed(url, 100, seed=1)  # the target already holds a run: the copy takes the next id
    target = make_engine(url)
    try:
        upgrade(target)
        copied = copy_run(engine, target, run_id)
        assert copied.source_id == run_id and copied.target_id == baseline + 1
        assert copied.rows["request"] == 120 and copied.rows["iteration"] == 30 and copied.rows["decision"] > 0
        for table in CHILD_TABLES:
            assert _rows(target, table, copied.target_id) == _rows(engine, table, run_id), table
            assert copied.rows[table] == len(_rows(engine, table, run_id))
        original, copy = get_run(engine, run_id), get_run(target, copied.target_id)
        for key in ("name", "mode", "status", "trace", "seed", "config", "plugins", "summary", "started_at",
                    "finished_at", "wall_s", "sim_end_s"):
            assert copy[key] == original[key], key
        assert copied_from(copy) == {"database": str(engine.url), "run_id": run_id, "sweep_id": None,
                                     "sweep_key": None}
        # read there as any run: compared with the run that was there
        metrics = {(c.metric, c.stat) for c in compare_runs(target, [baseline], [copied.target_id], n_resamples=50)}
        assert ("e2e", "p50") in metrics
    finally:
        target.dispose()


def test_a_sweep_run_loses_its_sweep_link_and_keeps_its_point(source, tmp_path):
    engine, run_id = source
    with engine.begin() as conn:
        conn.execute(update(models.run).where(models.run.c.id == run_id).values(
            sweep_id=7, sweep_key="p3", notes=json.dumps({"overrides": {"seed": 3}})))
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        upgrade(target)
        copy = get_run(target, copy_run(engine, target, run_id).target_id)
        assert copy["sweep_id"] is None and copy["sweep_key"] is None
        notes = json.loads(copy["notes"])
        assert notes["overrides"] == {"seed": 3}
        assert notes["copied_from"]["sweep_id"] == 7 and notes["copied_from"]["sweep_key"] == "p3"
        # a copy of the copy names both databases
        third = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
        upgrade(third)
        again = copied_from(get_run(third, copy_run(target, third, copy["id"]).target_id))
        assert again["database"] == str(target.url) and again["earlier"]["database"] == str(engine.url)
        third.dispose()
    finally:
        target.dispose()


def test_a_running_run_a_missing_run_and_the_same_database_are_refused(source, tmp_path):
    engine, run_id = source
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        upgrade(target)
        with pytest.raises(LookupError, match="no run 99 in sqlite:///"):
            copy_run(engine, target, 99)
        with pytest.raises(ValueError, match="same database"):
            copy_run(engine, make_engine(str(engine.url)), run_id)
        with engine.begin() as conn:
            conn.execute(update(models.run).where(models.run.c.id == run_id).values(status="running"))
        with pytest.raises(ValueError, match=f"run {run_id} is still running"):
            copy_run(engine, target, run_id)
        assert _counts(target) == dict.fromkeys(("run", *CHILD_TABLES), 0)
    finally:
        target.dispose()


def test_a_copy_that_fails_part_way_leaves_nothing_of_the_run(source, tmp_path, monkeypatch):
    engine, run_id = source
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        upgrade(target)
        with target.begin() as conn:  # the iteration table refuses the copy's rows (after requests, decisions ...)
            conn.execute(text("CREATE TRIGGER no_iterations BEFORE INSERT ON iteration "
                              "BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
        with pytest.raises(StorageError, match=f"copying run {run_id}'s iteration rows failed after 0: .*disk full"):
            copy_run(engine, target, run_id)
        assert _counts(target) == dict.fromkeys(("run", *CHILD_TABLES), 0)
    finally:
        target.dispose()


def test_the_command_copies_runs_into_a_new_file_and_runs_show_names_the_source(source, tmp_path):
    from controlplane.cli import app

    engine, run_id = source
    second = _replayed(str(engine.url), 40, seed=2)
    target = tmp_path / "new" / "ci.db"
    target.parent.mkdir()
    res = CliRunner().invoke(app, ["runs", "copy", str(run_id), str(second), str(run_id), "--db", str(engine.url),
                                   "--to", str(target)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"copied run {run_id} -> run 1 (120 request, ") and "30 iteration" in lines[0]
    assert lines[1].startswith(f"copied run {second} -> run 2 (40 request, ")
    assert len(lines) == 2  # (a run named twice is copied once)
    shown = CliRunner().invoke(app, ["runs", "show", "1", "--db", str(target)])
    assert shown.exit_code == 0 and f"copied from run {run_id} of {engine.url}" in shown.stdout
    missing = CliRunner().invoke(app, ["runs", "copy", "99", "--db", str(engine.url), "--to", str(target)])
    assert missing.exit_code != 0 and "no run 99" in missing.output


def test_the_same_database_spelled_otherwise_is_refused(source, tmp_path, monkeypatch):
    engine, run_id = source
    path = engine.url.database
    monkeypatch.chdir(tmp_path)
    for spelled in (f"sqlite:///{path}", path, f"{tmp_path}/sub/../candidate.db", "candidate.db"):
        with pytest.raises(ValueError, match="same database"):
            copy_run(engine, make_engine(spelled if "://" in spelled else f"sqlite:///{spelled}"), run_id)


def test_every_run_is_checked_before_any_is_copied_and_a_retry_copies_only_what_is_missing(source, tmp_path):
    from controlplane.cli import app

    engine, run_id = source
    second = _replayed(str(engine.url), 30, seed=3)
    target = tmp_path / "t.db"
    res = CliRunner().invoke(app, ["runs", "copy", str(run_id), "99", str(second), "--db", str(engine.url),
                                   "--to", str(target)])
    assert res.exit_code == 2 and "no run 99" in res.output and "copied run" not in res.output
    assert not target.exists()  # (nothing made: the source was checked first)
    once = CliRunner().invoke(app, ["runs", "copy", str(run_id), "--db", str(engine.url), "--to", str(target)])
    assert once.exit_code == 0, once.output
    again = CliRunner().invoke(app, ["runs", "copy", str(run_id), str(second), "--db", str(engine.url),
                                     "--to", str(target)])
    assert again.exit_code == 0, again.output
    assert f"run {run_id} is in sqlite:///{target} already, as run 1 (copied before): skipped" in " ".join(
        again.stderr.split())
    assert again.stdout.splitlines() == [again.stdout.splitlines()[0]] and f"copied run {second} -> run 2" in again.stdout
    forced = CliRunner().invoke(app, ["runs", "copy", str(run_id), "--again", "--db", str(engine.url),
                                      "--to", str(target)])
    assert forced.exit_code == 0 and f"copied run {run_id} -> run 3" in forced.stdout


def test_a_target_in_a_folder_that_does_not_exist_is_refused_and_the_source_named_absolutely(source, tmp_path,
                                                                                             monkeypatch):
    from controlplane.cli import app

    engine, run_id = source
    res = CliRunner().invoke(app, ["runs", "copy", str(run_id), "--db", str(engine.url),
                                   "--to", str(tmp_path / "deep" / "a" / "x.db")])
    assert res.exit_code == 2 and "no such folder" in res.output and not (tmp_path / "deep").exists()
    monkeypatch.chdir(tmp_path)  # a source named relative to the working folder: the copy names its file whole
    res = CliRunner().invoke(app, ["runs", "copy", str(run_id), "--db", "sqlite:///candidate.db", "--to", "b.db"])
    assert res.exit_code == 0, res.output
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    assert copied_from(get_run(target, 1))["database"] == f"sqlite:///{tmp_path / 'candidate.db'}"
    target.dispose()
