"""A database outage while rows keep coming: appends never wait, memory stays bounded (the
overflow is spilled and written back in order), and every row lands exactly once, even when a
commit's acknowledgement is lost.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from controlplane.storage import RunRecorder, iter_rows, make_engine, upgrade
from controlplane.storage.models import Decision, Request
from controlplane.storage.outage import PostgresOutage

from .support import decision_row, metric_row, request_row, start_run
from .test_failures import Sleeper, WriteLock, _counts


def _request_ids(engine: Engine) -> list[str]:
    """Request ids in insertion order."""
    table = Request.__table__
    with engine.connect() as conn:
        return list(conn.scalars(select(table.c.request_id).order_by(table.c.id)))


def _decision_subjects(engine: Engine) -> list[str]:
    table = Decision.__table__
    with engine.connect() as conn:
        return list(conn.scalars(select(table.c.subject).order_by(table.c.id)))


def _add(rec: RunRecorder, i: int) -> None:
    rec.add_request(request_row(i))
    rec.add_decision(decision_row(i))


def assert_every_row_once(url: str, run_id: int, count: int) -> None:
    """The run holds the ``count`` rows `AppendTimer` appended: each request row exactly once, and the
    decisions in the order they were made."""
    check = make_engine(url)
    try:
        ids = [r["request_id"] for r in iter_rows(check, run_id, "requests")]
        assert len(ids) == len(set(ids)) == count, "every request row exactly once"
        assert _decision_subjects(check) == [f"req-{i:06d}" for i in range(count)], "in order"
    finally:
        check.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.02})
    upgrade(engine)
    yield engine, path
    engine.dispose()


def test_overflow_is_spilled_and_written_back_first(sqlite_db: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, batch_size=10, max_retries=0, max_pending_rows=50, spill_dir=tmp_path / "spill",
                      sleep=Sleeper())
    start_run(rec)
    for i in range(5):
        _add(rec, i)
    assert rec.flush()
    lock = WriteLock(path)
    try:
        for i in range(5, 100):  # 190 rows while the database is locked: the first automatic flush fails,
            _add(rec, i)  # and the next ones keep the rows without trying again before the outage's pause
        assert rec.num_flush_failures == 1
        assert rec.spilled, "more than max_pending_rows waited: the oldest went to a file"
        assert all(p.parent == tmp_path / "spill" for p in rec.spilled)
        spilled_rows = sum(1 for p in rec.spilled for _ in p.open()) - len(rec.spilled)  # less the headers
        assert rec.pending - spilled_rows <= 50 + 20, "memory holds at most max_pending_rows + one batch"
        assert rec.pending == 190
    finally:
        lock.close()
    for i in range(100, 110):
        _add(rec, i)
    assert rec.flush() and rec.pending == 0
    assert rec.spilled == [] and not list((tmp_path / "spill").iterdir()), "written back, files removed"
    expected = [f"req-{i:06d}" for i in range(110)]
    assert _request_ids(engine) == expected, "in order, once each"
    assert _decision_subjects(engine) == expected
    assert rec.written["request"] == 110
    rec.close()


def test_close_during_an_outage_puts_every_pending_row_in_one_file(sqlite_db: tuple[Engine, Path],
                                                                   tmp_path: Path) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, batch_size=10, max_retries=0, max_pending_rows=30, spill_dir=tmp_path, sleep=Sleeper())
    start_run(rec)
    lock = WriteLock(path)
    try:
        for i in range(60):
            _add(rec, i)
        assert rec.spilled
        earlier = list(rec.spilled)
        with pytest.raises(Exception) as info:
            rec.close()
    finally:
        lock.close()
    assert "120 rows could not be written" in str(info.value)
    assert not any(p.exists() for p in earlier), "merged into the one file close reports"
    assert RunRecorder(engine).replay_spill(info.value.spill_path) == 120
    assert _request_ids(engine) == [f"req-{i:06d}" for i in range(60)]


class LostAcknowledgement:
    """An engine whose next ``n`` transactions commit and then report a dropped connection (with
    ``committed=False``: are rolled back with it instead; a transaction the database raised in is
    not counted)."""

    def __init__(self, engine: Engine, n: int = 1, *, committed: bool = True) -> None:
        self._engine = engine
        self.url, self.dialect = engine.url, engine.dialect
        self.remaining = n
        self.committed = committed

    @contextlib.contextmanager
    def begin(self) -> Iterator[Any]:
        with self._engine.begin() as conn:
            yield conn
            if not self.committed:
                self._drop()
        self._drop()

    def _drop(self) -> None:
        if self.remaining:
            self.remaining -= 1
            raise OperationalError("COMMIT", {}, ConnectionResetError("server closed the connection unexpectedly"))

    def connect(self) -> Any:
        return self._engine.connect()


@pytest.mark.parametrize("spill_first", [False, True])
def test_a_commit_whose_acknowledgement_was_lost_is_not_written_twice(
    engine: Engine, tmp_path: Path, spill_first: bool
) -> None:
    rec = RunRecorder(engine, batch_size=1000, max_retries=2, max_pending_rows=5 if spill_first else 1000,
                      spill_dir=tmp_path, sleep=Sleeper())
    run_id = start_run(rec)
    flaky = LostAcknowledgement(engine, n=3 if spill_first else 1)
    rec.engine = flaky
    for i in range(20):
        _add(rec, i)
        rec.add_metric(metric_row(i))
    if spill_first:
        assert rec.flush() is False, "three lost acknowledgements outlast two retries"
        assert rec.spilled, "then the rows (already committed) were spilled"
    assert rec.flush() is True
    assert rec.retries >= 1 and flaky.remaining == 0
    assert rec.pending == 0 and rec.spilled == []
    assert _counts(engine) == {"request": 20, "decision": 20, "metric_sample": 20, "worker_event": 0}
    assert len(list(iter_rows(engine, run_id, "requests"))) == 20
    rec.engine = engine
    rec.close()


def test_replaying_a_spill_skips_what_its_recorder_committed(engine: Engine, tmp_path: Path) -> None:
    """The last flush before close committed, but its acknowledgement was lost: close spilled
    those rows (it does not wait for the database: ``close_wait_s=0``), and the replay must not
    write them again."""
    rec = RunRecorder(engine, max_retries=0, spill_dir=tmp_path, sleep=Sleeper(), close_wait_s=0)
    start_run(rec)
    rec.engine = LostAcknowledgement(engine, n=1)
    for i in range(10):
        _add(rec, i)
    with pytest.raises(Exception) as info:
        rec.close()
    assert _counts(engine)["request"] == 10
    assert RunRecorder(engine).replay_spill(info.value.spill_path) == 0
    assert _request_ids(engine) == [f"req-{i:06d}" for i in range(10)]


class AppendTimer:
    """Appends a request and a decision every ``interval_s`` from its own thread, timing each call."""

    def __init__(self, rec: RunRecorder, interval_s: float = 0.001) -> None:
        self.rec, self.interval_s = rec, interval_s
        self.count = 0
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            _add(self.rec, self.count)
            self.durations.append(time.perf_counter() - t0)
            self.count += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> AppendTimer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_appends_do_not_wait_for_a_locked_sqlite(sqlite_db: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, batch_size=50, max_retries=2, retry_backoff_s=0.3, flush_interval_s=0.05,
                      background=True, max_pending_rows=300, spill_dir=tmp_path)
    start_run(rec)
    with AppendTimer(rec) as producer:
        time.sleep(0.3)
        lock = WriteLock(path)
        try:
            time.sleep(1.5)
            during = list(producer.durations)
        finally:
            lock.close()
        time.sleep(0.3)
    rec.close()
    assert rec.num_flush_failures >= 1 and rec.retries >= 2  # each failed flush spent >= 0.9 s retrying
    assert max(during) < 0.2, f"an append waited {max(during) * 1000:.1f} ms"
    assert _request_ids(engine) == [f"req-{i:06d}" for i in range(producer.count)]


# -- PostgreSQL: connections refused and killed for a while -----------------------------------


@pytest.mark.postgres
def test_postgres_outage_mid_run_loses_nothing_and_appends_never_wait(
    pg_url: str, pg_admin: Engine, tmp_path: Path
) -> None:
    engine = make_engine(pg_url, connect_args={"application_name": f"cp-outage-{uuid.uuid4().hex[:8]}",
                                               "connect_timeout": 2})
    upgrade(engine)
    rec = RunRecorder(engine, batch_size=200, max_retries=2, retry_backoff_s=0.25, flush_interval_s=0.1,
                      background=True, max_pending_rows=400, spill_dir=tmp_path)
    run_id = start_run(rec)
    outage = PostgresOutage(pg_admin, make_url(pg_url).database, interval_s=0.05)
    with AppendTimer(rec) as producer:
        time.sleep(0.5)
        before = producer.count
        outage.begin()
        try:
            time.sleep(3.0)
            during = list(producer.durations[before:])
            failures = rec.num_flush_failures
            spilled = list(rec.spilled)
        finally:
            outage.end()
        time.sleep(0.5)
    rec.close()
    engine.dispose()
    assert failures >= 1 and spilled, "the flushes failed and the overflow went to a file"
    assert len(during) > 500
    # A failed flush spends >= 0.75 s in retries; no append waited for one.
    assert max(during) < 0.2, f"an append waited {max(during) * 1000:.1f} ms"
    print(f"\nappends during the outage: {len(during)}, max {max(during) * 1000:.2f} ms; "
          f"{failures} failed flushes, {len(spilled)} spill file(s)")
    assert_every_row_once(pg_url, run_id, producer.count)
