"""A run deleted while it is being written (`controlplane runs delete RUN --force`): the recorder stops writing it
with one error, `RunDeleted`, on its first foreign-key refusal (controlplane.storage.deleted_runs), instead of
committing its rows again one by one in savepoints, refusing each to an 80 MB refused file and, on PostgreSQL,
exhausting the server's lock table. Real SQLite and PostgreSQL; the writer process and a whole replay too."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, select, text
from typer.testing import CliRunner

from controlplane.storage import RunRecorder, StorageError, make_engine, upgrade
from controlplane.storage.errors import RunDeleted
from controlplane.storage.models import Request
from controlplane.storage.orphans import delete_run

from .support import FINISHED, decision_row, metric_row, request_row, start_run


def _savepoints(engine: Engine) -> list[str]:
    """Every SAVEPOINT statement ``engine`` sends from now on (the isolating commit's bisection)."""
    seen: list[str] = []

    @event.listens_for(engine, "savepoint")
    def _saw(conn, name) -> None:  # noqa: ANN001
        seen.append(name)

    return seen


def _said(exc: BaseException, run_id: int, engine: Engine) -> None:
    assert isinstance(exc, RunDeleted) and exc.run_ids == {run_id}
    url = engine.url.render_as_string(hide_password=True)
    assert str(exc) == (f"run {run_id} was deleted while being written (no run row in {url} any more: `controlplane "
                        "runs delete --force`, or SQL): the rows not yet written were dropped, and nothing more of "
                        "it is recorded")


def _no_files(*folders: Path) -> None:
    for folder in folders:
        assert not list(folder.glob("controlplane-refused-*")) and not list(folder.glob("controlplane-spill-*"))


def _requests(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Request.__table__)).scalar_one()


def test_a_run_deleted_mid_run_stops_its_recorder_with_one_error(engine: Engine, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rec = RunRecorder(engine, spill_dir=tmp_path)
    run_id = start_run(rec)
    rec.add_request(request_row(0))
    assert rec.flush()
    assert delete_run(engine, run_id)["run"] == 1  # (`runs delete --force` while it runs)
    savepoints = _savepoints(engine)
    for i in range(1, 2001):
        rec.add_request(request_row(i))
        rec.add_decision(decision_row(i))
        rec.add_metric(metric_row(i))
    with pytest.raises(RunDeleted) as info:
        rec.flush()
    _said(info.value, run_id, engine)
    assert savepoints == [] and rec.refused.count == 0 and rec.pending == 0  # no bisection, nothing refused or kept
    assert rec.errors == [] and rec.retries == 0
    rec.add_request(request_row(5000))  # later rows of the run: dropped, the same error
    with pytest.raises(RunDeleted) as again:
        rec.flush()
    assert str(again.value) == str(info.value)
    with pytest.raises(RunDeleted):  # its end too; then the close, once, the same
        rec.finish_run(run_id, status="failed", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    with pytest.raises(RunDeleted):
        rec.close()
    rec.close()  # (closing twice is harmless)
    assert _requests(engine) == 0
    _no_files(tmp_path)


def test_a_run_deleted_after_its_last_rows_fails_its_end(engine: Engine, tmp_path: Path) -> None:
    """Its end alone (no row to refuse): the update finding no run said a warning, and the run 'finished'."""
    rec = RunRecorder(engine, spill_dir=tmp_path)
    run_id = start_run(rec)
    rec.add_request(request_row(0))
    assert rec.flush()
    delete_run(engine, run_id)
    with pytest.raises(RunDeleted) as info:
        rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    _said(info.value, run_id, engine)
    with pytest.raises(RunDeleted):
        rec.close()
    _no_files(tmp_path)


def test_a_daemons_recorder_says_it_once_and_drops_the_rows_as_they_come(sqlite_engine: Engine, tmp_path: Path,
                                                                         caplog) -> None:
    rec = RunRecorder(sqlite_engine, background=True, flush_interval_s=0.05, spill_dir=tmp_path)
    run_id = start_run(rec, mode="live")
    rec.add_request(request_row(0))
    assert rec.flush()
    delete_run(sqlite_engine, run_id)
    with caplog.at_level(logging.ERROR, logger="controlplane.storage.recorder"):
        for i in range(1, 6):
            rec.add_request(request_row(i))
            time.sleep(0.15)  # (each batch: the writer thread's flush)
        with pytest.raises(RunDeleted):
            rec.close()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and said[0].startswith(f"storage: run {run_id} was deleted while being written"), said
    assert rec.pending == 0 and rec.refused.count == 0
    _no_files(tmp_path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer process is forked")
def test_the_writer_process_ends_and_the_replaying_process_raises_at_its_next_hand_off(tmp_path: Path) -> None:
    from controlplane.storage.early import EarlyWriter, FrontRecorder

    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    front = FrontRecorder(EarlyWriter(), f"sqlite:///{path}", batch_size=50, spill_dir=str(tmp_path))
    run_id = start_run(front)
    for i in range(60):
        front.add_request(request_row(i))
    assert front.flush()
    delete_run(engine, run_id)
    with pytest.raises(RunDeleted) as info:
        for i in range(60, 200_000):  # (hand-offs every 50 rows: the writer ends at the first, the next send fails)
            front.add_request(request_row(i))
    assert i < 30_000, i  # (at most what its pipe (1 MiB) and inbox held when it ended)
    _said(info.value, run_id, engine)
    with pytest.raises(RunDeleted):  # the session's end: the same error, not "recorder is closed"
        front.finish_run(run_id, status="failed", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    front.close()
    assert _requests(engine) == 0
    _no_files(tmp_path)
    engine.dispose()


@pytest.mark.parametrize("writer_process", ["0", "1"])
def test_a_replay_whose_run_is_deleted_ends_at_once_with_that_error(db_url: str, tmp_path: Path, writer_process: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The report: `runs delete 1 --yes --force` on a replay being written; its replay ground on for 6 min 44 s
    (SQLite: nine 80 MB refused files) or exhausted PostgreSQL's lock table ("out of shared memory"), then said
    "refused 20,000 row(s) ... FOREIGN KEY constraint failed"."""
    from controlplane.cli import app

    monkeypatch.setenv("CONTROLPLANE_WRITER_PROCESS", writer_process)
    monkeypatch.chdir(tmp_path)
    engine = make_engine(db_url)
    deleted: list[float] = []

    def delete_once_rows_are_in() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    n = conn.execute(text("SELECT count(*) FROM request WHERE run_id = 1")).scalar()
            except Exception:  # noqa: BLE001 - the schema not made yet
                n = 0
            if n:
                delete_run(engine, 1)
                deleted.append(time.monotonic())
                return
            time.sleep(0.02)

    killer = threading.Thread(target=delete_once_rows_are_in, daemon=True)
    killer.start()
    result = CliRunner().invoke(app, ["sim", "replay", "--repeat", "3", "--db", db_url, "--no-progress", "--json"])
    ended = time.monotonic()
    killer.join(5)
    assert deleted, "the run was not deleted while it ran"
    assert result.exit_code == 2, (result.output, result.exception)
    url = engine.url.render_as_string(hide_password=True)
    assert result.stderr.strip() == (f"error: database: run 1 was deleted while being written (no run row in {url} "
                                     "any more: `controlplane runs delete --force`, or SQL): the rows not yet written "
                                     "were dropped, and nothing more of it is recorded"), result.stderr
    assert ended - deleted[0] < 10, ended - deleted[0]  # (the replay alone runs longer; it was minutes)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM run")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 0
    engine.dispose()
    _no_files(tmp_path)  # (where its spills and refused files would go: beside the SQLite file, the cwd)


def test_run_deleted_is_a_storage_error_that_crosses_the_pipe() -> None:
    import pickle

    from controlplane.storage.deleted_runs import deleted_error

    error = pickle.loads(pickle.dumps(deleted_error([3, 1], "sqlite:///x.db")))
    assert isinstance(error, StorageError) and error.run_ids == {1, 3}
    assert str(error).startswith("runs 1, 3 were deleted while being written (no run row in sqlite:///x.db any more")
