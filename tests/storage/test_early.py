"""A writer process forked before the run stores what an inline recorder stores, fails the way it
fails, and leaves the replaying process without SQLAlchemy."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.storage import RunRecorder, StorageError, make_engine, upgrade
from controlplane.storage.early import (
    ENV_SWITCH,
    EarlyWriter,
    FrontRecorder,
    another_cpu_free,
    early_writer_usable,
    writer_process_possible,
)

from .support import (FINISHED, decision_row, metric_row, request_row, spill_beside, start_run,
                      worker_event_row)
from .test_failures import WriteLock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer process is forked")

TABLES = ("run", "request", "decision", "metric_sample", "worker_event", "iteration", "writer_mark")


def _engine(path: Path, **kwargs) -> Engine:
    engine = make_engine(f"sqlite:///{path}", **kwargs)
    upgrade(engine)
    return engine


def _rows(path: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(path)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        con.close()
    out["writer_mark"] = [r[1:] for r in out["writer_mark"]]  # (writer uuid, seq): the seq counts flushes
    return out


def _record(rec, n: int) -> int:
    run_id = start_run(rec)
    for i in range(n):
        rec.add_request(request_row(i))
        rec.add_decision(decision_row(i))
        if i % 7 == 0:
            rec.add_metric(metric_row(i))
        if i % 50 == 0:
            rec.add_worker_event(worker_event_row(i))
    return run_id


def _finish(rec, run_id: int) -> bool:
    return rec.finish_run(run_id, status="finished", summary={"n": 1}, finished_at=FINISHED, wall_s=1.0,
                          sim_end_s=10.0)


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_rows_equal_an_inline_recorders(tmp_path: Path) -> None:
    inline_path, early_path = tmp_path / "inline.db", tmp_path / "early.db"
    inline_engine = _engine(inline_path)
    inline = RunRecorder(inline_engine, batch_size=64)
    writer = EarlyWriter()
    front = FrontRecorder(writer, f"sqlite:///{early_path}", batch_size=64)  # the child creates the schema
    run_ids = [_record(rec, 700) for rec in (inline, front)]
    assert front.pending < 64 * 4, "full buffers went to the writer"
    for rec, run_id in zip((inline, front), run_ids):
        assert _finish(rec, run_id) is True
    assert front.written == inline.written and front.written["request"] == 700
    assert front.errors == [] and front.num_flush_failures == 0
    pid = writer.pid
    for rec in (inline, front):
        rec.close()
    assert writer.pid is None and _gone(pid)
    inline_rows, early_rows = _rows(inline_path), _rows(early_path)
    run_inline, run_early = inline_rows.pop("run"), early_rows.pop("run")
    assert early_rows == inline_rows
    assert len(early_rows["decision"]) == 700 and early_rows["writer_mark"] == inline_rows["writer_mark"]
    assert [r[:9] for r in run_early] == [r[:9] for r in run_inline]
    inline_engine.dispose()


def test_buffers_go_to_the_writer_at_handoff_rows_with_the_same_rows(tmp_path: Path) -> None:
    """A table's buffer goes to the writer at ``handoff_rows`` when ``batch_size`` is larger, so the
    writer writes during the run; the rows are an inline recorder's (only the flush count differs)."""
    inline_path, early_path = tmp_path / "inline.db", tmp_path / "early.db"
    inline_engine = _engine(inline_path)
    inline = RunRecorder(inline_engine, batch_size=20000)
    front = FrontRecorder(EarlyWriter(), f"sqlite:///{early_path}", batch_size=20000, handoff_rows=30)
    run_ids = [_record(rec, 100) for rec in (inline, front)]
    assert inline.pending > 200 and front.pending < 30 * 3  # the decisions and requests went at 30 each
    for rec, run_id in zip((inline, front), run_ids):
        assert _finish(rec, run_id) is True
        rec.close()
    inline_rows, early_rows = _rows(inline_path), _rows(early_path)
    run_inline, run_early = inline_rows.pop("run"), early_rows.pop("run")
    inline_mark, early_mark = inline_rows.pop("writer_mark"), early_rows.pop("writer_mark")
    assert early_rows == inline_rows and len(early_rows["request"]) == 100
    assert inline_mark == [(1,)] and early_mark == [(4,)]  # flushes: one inline; three hand-offs and the last
    assert [r[:9] for r in run_early] == [r[:9] for r in run_inline]
    with pytest.raises(ValueError, match="must be >= 1"):
        FrontRecorder(EarlyWriter(), f"sqlite:///{early_path}", handoff_rows=0)
    inline_engine.dispose()


def test_a_writer_configured_early_touches_the_database_only_when_the_run_starts(tmp_path: Path) -> None:
    """``configure`` sends the database now (the child makes its engine while the caller imports);
    the schema and the run row wait for the start, and a recorder with the same settings sends
    nothing again. Other settings are an error; a run that never starts leaves no database."""
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    writer = EarlyWriter()
    writer.configure(url, batch_size=40, max_pending_rows=1000)
    writer.configure(url, batch_size=40, max_pending_rows=1000)  # the same: nothing sent
    with pytest.raises(StorageError, match="configured for"):
        writer.configure(url, batch_size=41, max_pending_rows=1000)
    with pytest.raises(StorageError, match="configured for"):
        FrontRecorder(writer, f"sqlite:///{tmp_path / 'other.db'}", batch_size=40, max_pending_rows=1000)
    rec = FrontRecorder(writer, url, batch_size=40, max_pending_rows=1000)
    assert not path.exists()  # no schema yet: only the engine and the recorder
    run_id = _record(rec, 100)
    assert _finish(rec, run_id) is True
    rec.close()
    assert len(_rows(path)["request"]) == 100

    unused = tmp_path / "unused.db"
    writer = EarlyWriter()
    pid = writer.pid
    writer.configure(f"sqlite:///{unused}")
    writer.discard()  # the run never started (a missing trace)
    assert _gone(pid) and not unused.exists()


def test_a_locked_database_is_reported_and_spilled_as_inline(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    _engine(path).dispose()
    rec = FrontRecorder(EarlyWriter(), f"sqlite:///{path}", batch_size=40, max_retries=1, retry_backoff_s=0.0,
                        close_wait_s=0, engine_kwargs={"connect_args": {"timeout": 0.05}})
    run_id = start_run(rec)
    lock = WriteLock(path)
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
    spill_path = spill_beside(info, path)
    assert "101 rows could not be written" in str(info.value)
    engine = make_engine(f"sqlite:///{path}")
    assert RunRecorder(engine).replay_spill(spill_path) == 101
    assert len(_rows(path)["request"]) == 100
    engine.dispose()


def test_the_writer_waits_through_an_outage_at_the_close_as_inline(tmp_path: Path) -> None:
    """The writer process closes with the inline recorder's own wait (``close_wait_s``): a
    database back within it takes every row, none is spilled."""
    import threading
    import time

    path = tmp_path / "runs.db"
    _engine(path).dispose()
    rec = FrontRecorder(EarlyWriter(), f"sqlite:///{path}", batch_size=40, max_retries=0, close_wait_s=20.0,
                        engine_kwargs={"connect_args": {"timeout": 0.05}})
    run_id = start_run(rec)
    held, closing = threading.Event(), threading.Event()

    def outage() -> None:  # (a sqlite3 connection is used in the thread that made it)
        lock = WriteLock(path)
        held.set()
        closing.wait()
        time.sleep(1.0)  # back a second after the close began: within its wait
        lock.close()

    thread = threading.Thread(target=outage)
    thread.start()
    held.wait()
    for i in range(100):
        rec.add_request(request_row(i))
    assert _finish(rec, run_id) is False
    closing.set()
    rec.close()
    thread.join()
    assert len(_rows(path)["request"]) == 100
    assert not list(tmp_path.glob("controlplane-spill-*"))


@pytest.mark.parametrize(("url", "error", "match"), [
    ("foo://x/y", ValueError, "unknown or uninstalled database driver in URL 'foo://x/y'"),
    ("postgresql://nobody:secret@127.0.0.1:1/x", StorageError, "OperationalError: .*127.0.0.1"),
])
def test_a_database_the_writer_cannot_open_fails_the_start_as_inline(url: str, error: type, match: str) -> None:
    writer = EarlyWriter()
    pid = writer.pid
    rec = FrontRecorder(writer, url)
    with pytest.raises(error, match=match):
        start_run(rec)
    assert writer.pid is None and _gone(pid)
    with pytest.raises(StorageError, match="closed"):
        rec.appender("decision")((1.0, "p", "h", None, None, None, None, False))


def test_the_writer_closes_the_recorder_when_its_parent_is_gone(tmp_path: Path) -> None:
    """The replaying process dies without closing: its writer sees the pipe close, writes what
    it was sent, and exits."""
    path = tmp_path / "runs.db"
    writer = EarlyWriter()
    rec = FrontRecorder(writer, f"sqlite:///{path}", batch_size=50)
    _record(rec, 120)
    pid = writer.pid
    os.close(writer.to_child)  # what the parent's exit does to the pipe
    writer.to_child = -1
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    writer.pid = None
    writer.discard()
    sent = 120 - len(rec._buffers["request"])  # full buffers went to the writer; the rest never left
    assert sent >= 50
    assert len(_rows(path)["request"]) == sent


def test_a_writer_left_unused_exits_when_discarded() -> None:
    writer = EarlyWriter()
    pid = writer.pid
    writer.discard()
    writer.discard()  # idempotent
    assert _gone(pid)


def test_usable_only_where_a_child_reaches_the_same_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "1")
    file_url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert early_writer_usable(file_url) is True
    assert early_writer_usable("postgresql+psycopg://u@h/db") is True
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true", "not a url"):
        assert early_writer_usable(url) is False, url  # the child would write its own copy, or cannot tell
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert early_writer_usable(file_url) is False  # one CPU: the writer would only compete with the run
    monkeypatch.undo()
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert early_writer_usable(file_url) is False


@pytest.mark.parametrize(("running", "free"), [(1, True), (2, False), (5, False)])
def test_by_default_only_a_free_cpu_gets_a_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: int,
                                                  free: bool) -> None:
    """Unset, the switch forks only when fewer tasks than CPUs run (this one included): on a
    busy host the writer would add its work without a core to overlap it on."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"1.46 1.51 1.83 {running}/345 27583\n")
    assert another_cpu_free(str(loadavg)) is free
    assert writer_process_possible(str(loadavg)) is free
    monkeypatch.setenv(ENV_SWITCH, "1")
    assert writer_process_possible(str(loadavg)) is True  # forced
    assert another_cpu_free(str(tmp_path / "missing")) is True  # unreadable: assume free


def test_a_refused_fork_leaves_the_run_to_write_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.session import RunSession
    from controlplane.testing import make_config

    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setenv(ENV_SWITCH, "1")
    open_fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", refuse)
    assert EarlyWriter.fork() is None
    assert len(os.listdir("/proc/self/fd")) == open_fds  # its pipes closed again
    session = RunSession(make_config(storage={"url": f"sqlite:///{tmp_path / 'runs.db'}"}), mode="sim")
    try:
        assert isinstance(session.recorder, RunRecorder) and session.run_id is not None
    finally:
        session.close({})


def test_appenders_store_and_refuse_what_an_inline_recorders_do(tmp_path: Path) -> None:
    """The generated appenders (a tuple of values, or an event's attributes: the run's SQL
    recorder) store the inline recorder's rows, hand off at ``handoff_rows``, and refuse a bad
    row at once with its error naming the table and column."""
    import numpy as np

    from controlplane.events import MetricSample
    from controlplane.recording import DECISION_COLUMNS, METRIC_COLUMNS
    from controlplane.storage.rows import SPECS
    from controlplane.types import Decision

    inline_path, early_path = tmp_path / "inline.db", tmp_path / "early.db"
    inline_engine = _engine(inline_path)
    recorders = (RunRecorder(inline_engine, batch_size=64),
                 FrontRecorder(EarlyWriter(), f"sqlite:///{early_path}", batch_size=64, handoff_rows=16))
    bad = [("decision", Decision(time_s=None, hook="h", plugin="p", action="a")),  # type: ignore[arg-type]
           ("decision", Decision(time_s=1.0, hook="h", plugin="p", action="a", payload={"x": object()})),
           ("metric_sample", MetricSample(1.0, "m", "many")),  # type: ignore[arg-type]
           ("request", (None,) * 3),
           ("request", tuple(request_row(1, status="lost").get(c) for c in SPECS["request"].columns))]
    refusals = []
    for rec in recorders:
        add = {"decision": rec.appender("decision", DECISION_COLUMNS),
               "metric_sample": rec.appender("metric_sample", METRIC_COLUMNS), "request": rec.appender("request")}
        with pytest.raises(StorageError, match="no run started"):
            add["decision"](Decision(time_s=1.0, hook="h", plugin="p", action="a"))
        run_id = start_run(rec)
        for i in range(100):
            add["decision"](Decision(time_s=i * 0.5, hook="h", plugin="p", action="a", subject=f"r{i}",
                                     payload={"i": i, "n": np.int64(i), "set": {i, 1}} if i % 3 else None,
                                     is_error=np.bool_(i % 5 == 0)))
            add["metric_sample"](MetricSample(np.float64(i), "m", i, {"model": "x"} if i % 2 else None))
            add["request"](tuple(request_row(i).get(c) for c in SPECS["request"].columns))
        refusals.append([])
        for table, row in bad:
            with pytest.raises(ValueError) as exc:
                add[table](row)
            refusals[-1].append(str(exc.value))
        assert _finish(rec, run_id) is True
        rec.close()
    assert refusals[0] == refusals[1]
    assert [r.split(" = ")[0] for r in refusals[0][1:3]] == ["decision.payload", "metric_sample.value"]
    inline_rows, early_rows = _rows(inline_path), _rows(early_path)
    for rows in (inline_rows, early_rows):
        rows.pop("run"), rows.pop("writer_mark")
    assert early_rows == inline_rows and len(early_rows["decision"]) == 100
    inline_engine.dispose()


def _begin(rec: FrontRecorder) -> None:
    """`start_run`'s arguments (tests/storage/support.py), sent without waiting for the id."""
    captured = {}
    start_run(type("Capture", (), {"start_run": lambda self, **kw: captured.update(kw)})())
    rec.begin_run(**captured)


def test_rows_added_before_the_run_id_is_read_wait_for_it(tmp_path: Path) -> None:
    """`begin_run` sends the run row and goes on; the first row added (or a flush, or the
    close) reads the id first, so rows and replies never mix with the start's reply."""
    inline_path, early_path = tmp_path / "inline.db", tmp_path / "early.db"
    inline = RunRecorder(_engine(inline_path), batch_size=40)
    front = FrontRecorder(EarlyWriter(), f"sqlite:///{early_path}", batch_size=40)
    start_run(inline)
    _begin(front)
    assert front.run_id is None
    for rec in (inline, front):
        for i in range(100):
            rec.add_request(request_row(i))
            rec.add_decision(decision_row(i))
    assert front.run_id == 1 and front.run_started() == 1
    with pytest.raises(StorageError, match="one run per writer process"):
        _begin(front)
    for rec in (inline, front):
        assert _finish(rec, 1) is True
        rec.close()
    assert _rows(early_path) == _rows(inline_path)


def test_a_flush_or_close_right_after_begin_run_reads_the_id_first(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    for n, ending in enumerate(("flush", "close"), 1):
        rec = FrontRecorder(EarlyWriter(), f"sqlite:///{path}")
        _begin(rec)
        if ending == "flush":
            assert rec.flush() is True and rec.run_id == n
            assert _finish(rec, n) is True
        rec.close()
        assert rec.run_id == n
    assert [r[:3] for r in _rows(path)["run"]] == [(1, "unit", "sim"), (2, "unit", "sim")]


def test_abandoning_after_begin_run_waits_for_the_row_and_ends_the_writer_quietly(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.db"
    writer = EarlyWriter()
    pid = writer.pid
    rec = FrontRecorder(writer, f"sqlite:///{path}")
    _begin(rec)
    rec.abandon()
    assert _gone(pid) and rec.run_id == 1
    assert "failed" not in capfd.readouterr().err
    assert [r[3] for r in _rows(path)["run"]] == ["running"]  # as an abandon after start_run leaves it


def test_a_session_that_defers_the_run_id_reads_it_before_the_first_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RunSession(defer_run_id=True)`` (a replay): ``ctx.run.run_id`` is None until
    ``started()``, which reads it (1, then 2 in the same database); ``run_id`` and ``close``
    read it too."""
    from controlplane.session import RunSession
    from controlplane.testing import make_config

    monkeypatch.setenv(ENV_SWITCH, "1")
    config = make_config(storage={"url": f"sqlite:///{tmp_path / 'runs.db'}"})
    for n in (1, 2):
        session = RunSession(config, mode="sim", defer_run_id=True)
        assert isinstance(session.recorder, FrontRecorder)
        assert session.core.ctx.run.run_id is None
        assert (session.started() if n == 1 else session.run_id) == n
        assert session.core.ctx.run.run_id == n
        assert session.close({})["run_id"] == n
    session = RunSession(config, mode="sim", defer_run_id=True)
    assert session.close({})["run_id"] == 3  # closed without asking: close reads it


def test_a_deferred_start_that_fails_raises_at_started_and_closes_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database's error comes from ``started()`` (or from the ``with`` block's exit, ahead
    of the block's own error, as it came first when the start waited); nothing else is raised."""
    from controlplane.session import RunSession
    from controlplane.testing import make_config

    monkeypatch.setenv(ENV_SWITCH, "1")
    config = make_config(storage={"url": "postgresql://nobody:secret@127.0.0.1:1/x"})
    with pytest.raises(StorageError, match="OperationalError: .*127.0.0.1"):
        with RunSession(config, mode="sim", defer_run_id=True) as session:
            writer = session.recorder.writer
            session.started()
    assert writer.pid is None
    assert session.close({"x": 1}) == {"x": 1}  # closed: nothing to record
    with pytest.raises(StorageError, match="OperationalError: .*127.0.0.1"):
        with RunSession(config, mode="sim", defer_run_id=True):
            raise KeyError("the set-up's own error")
