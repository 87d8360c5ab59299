"""The forked writer process stores what an inline recorder stores, and fails the way it fails."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.storage import RunRecorder, StorageError, make_engine, upgrade
from controlplane.storage.writer_process import ENV_SWITCH, ProcessRecorder, writer_process_usable

from .support import FINISHED, decision_row, metric_row, request_row, start_run, worker_event_row

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer process is forked")

TABLES = ("run", "request", "decision", "metric_sample", "worker_event", "iteration", "writer_mark")


def _engine(path: Path, **kwargs) -> Engine:
    engine = make_engine(f"sqlite:///{path}", **kwargs)
    upgrade(engine)
    return engine


@pytest.fixture
def two_dbs(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    a, b = _engine(tmp_path / "inline.db"), _engine(tmp_path / "forked.db")
    yield a, b
    a.dispose()
    b.dispose()


def _rows(engine: Engine) -> dict[str, list[tuple]]:
    """Every table's rows in storage order; the run's and the writer's wall-clock and random parts aside."""
    path = engine.url.database
    con = sqlite3.connect(path)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        con.close()
    out["writer_mark"] = [r[1:] for r in out["writer_mark"]]  # (writer uuid, seq): the seq counts flushes
    return out


def _record(rec: RunRecorder, n: int) -> int:
    run_id = start_run(rec)
    for i in range(n):
        rec.add_request(request_row(i))
        rec.add_decision(decision_row(i))
        if i % 7 == 0:
            rec.add_metric(metric_row(i))
        if i % 50 == 0:
            rec.add_worker_event(worker_event_row(i))
    return run_id


def _finish(rec: RunRecorder, run_id: int) -> bool:
    return rec.finish_run(run_id, status="finished", summary={"n": 1}, finished_at=FINISHED, wall_s=1.0,
                          sim_end_s=10.0)


def test_rows_equal_an_inline_recorders(two_dbs: tuple[Engine, Engine]) -> None:
    inline_engine, forked_engine = two_dbs
    inline = RunRecorder(inline_engine, batch_size=64)
    forked = ProcessRecorder(forked_engine, batch_size=64)
    run_ids = []
    for rec in (inline, forked):
        run_ids.append(_record(rec, 700))
    assert forked._child is not None, "a full buffer forks the writer"
    assert forked._backlog.in_memory == 0, "the parent keeps nothing it sent"
    for rec, run_id in zip((inline, forked), run_ids):
        assert _finish(rec, run_id) is True
    assert forked.written == inline.written and forked.written["request"] == 700
    assert forked.errors == [] and forked.num_flush_failures == 0
    pid = forked._child
    for rec in (inline, forked):
        rec.close()
    assert forked._child is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)  # reaped by close
    inline_rows, forked_rows = _rows(inline_engine), _rows(forked_engine)
    run_inline, run_forked = inline_rows.pop("run"), forked_rows.pop("run")
    assert forked_rows == inline_rows
    assert len(forked_rows["decision"]) == 700 and forked_rows["writer_mark"] == inline_rows["writer_mark"]
    assert [r[:9] for r in run_forked] == [r[:9] for r in run_inline]  # status, summary, ... up to started_at


def test_a_run_that_never_fills_a_buffer_does_not_fork(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "runs.db")
    rec = ProcessRecorder(engine, batch_size=5000)
    run_id = _record(rec, 100)
    assert _finish(rec, run_id) is True
    assert rec._child is None
    rec.close()
    assert len(_rows(engine)["request"]) == 100
    engine.dispose()


class _WriteLock:
    """SQLite's write lock held from another connection, as a competing writer would hold it."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


@pytest.mark.parametrize("cls", [RunRecorder, ProcessRecorder])
def test_a_locked_database_is_reported_and_spilled_as_inline(tmp_path: Path, cls: type[RunRecorder]) -> None:
    """The writer process's failures reach the caller as an inline recorder's do: ``finish_run``
    says False, ``errors`` holds the failures, ``close`` raises the same ``StorageError`` with
    the spill file next to the database, and replaying it stores every row."""
    path = tmp_path / "runs.db"
    engine = _engine(path, connect_args={"timeout": 0.05})
    rec = cls(engine, batch_size=40, max_retries=1, retry_backoff_s=0.0)
    run_id = start_run(rec)
    lock = _WriteLock(path)
    try:
        for i in range(100):
            rec.add_request(request_row(i))
        assert _finish(rec, run_id) is False
        assert rec.errors and "database is locked" in rec.errors[-1].error
        assert rec.num_flush_failures == len(rec.errors) >= 1
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    if cls is ProcessRecorder:
        assert rec._child is None
    spill_path = info.value.spill_path
    assert spill_path is not None and spill_path.parent == path.parent
    assert "101 rows could not be written" in str(info.value) and str(spill_path) in str(info.value)
    assert RunRecorder(engine).replay_spill(spill_path) == 101
    assert len(_rows(engine)["request"]) == 100
    engine.dispose()


def test_the_writer_closes_the_recorder_when_its_parent_is_gone(tmp_path: Path) -> None:
    """The replaying process dies without closing: its writer sees the pipe close, writes what
    it was sent, and exits."""
    engine = _engine(tmp_path / "runs.db")
    rec = ProcessRecorder(engine, batch_size=50)
    _record(rec, 120)
    pid = rec._child
    assert pid is not None
    os.close(rec._to_child)  # what the parent's exit does to the pipe
    rec._to_child = -1
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    rec._child = None
    os.close(rec._from_child)
    rec._from_child = -1
    sent = 120 - len(rec._buffers["request"])  # full buffers went to the writer; the rest never left
    assert sent >= 50
    assert len(_rows(engine)["request"]) == sent
    engine.dispose()


def test_usable_only_where_a_child_reaches_the_same_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_engine = make_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    memory_engine = make_engine("sqlite://")
    assert writer_process_usable(file_engine) is True
    assert writer_process_usable(memory_engine) is False  # the child would write its own copy
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert writer_process_usable(file_engine) is False  # one CPU: the writer would only compete with the run
    monkeypatch.undo()
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert writer_process_usable(file_engine) is False
    with pytest.raises(ValueError, match="background"):
        ProcessRecorder(file_engine, background=True)
    file_engine.dispose()
    memory_engine.dispose()
