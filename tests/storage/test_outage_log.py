"""A database outage is logged when it starts, at growing intervals while it lasts (with the rows
pending) and when it ends (how long, how many rows written late): not at every failed write.
The outage is real: SQLite's write lock held by a second connection (as in test_outage.py); only
the time is simulated, so ten minutes of retries take seconds."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from controlplane.storage import RunRecorder, make_engine, upgrade
from controlplane.storage.outage_log import FIRST_REMINDER_S

from .support import decision_row, request_row, start_run
from .test_failures import WriteLock

LOGGER = "controlplane.storage.recorder"


class FakeTime:
    """The recorder's clock and sleep: a retry's backoff moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _add(rec: RunRecorder, i: int) -> None:
    rec.add_request(request_row(i))
    rec.add_decision(decision_row(i))


def test_an_outage_is_logged_once_then_now_and_then_and_once_when_it_ends(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    upgrade(engine)
    time = FakeTime()
    rec = RunRecorder(engine, batch_size=10_000, max_retries=3, retry_backoff_s=0.5, spill_dir=tmp_path / "spill",
                      sleep=time.sleep, clock=time)
    start_run(rec)
    _add(rec, 0)
    assert rec.flush()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    lock = WriteLock(path)
    began = time.now
    try:
        for i in range(1, 61):  # 60 flushes, each 4 attempts (3.5 s of backoff) and the writer's 4 s pause
            _add(rec, i)
            assert not rec.flush()
            time.sleep(4.0)
    finally:
        lock.close()
    lasted = time.now - began
    assert rec.num_flush_failures == 60 and rec.retries == 180  # every failure still counted
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert "is unavailable (OperationalError: database is locked); 2 rows pending" in warnings[0], warnings[0]
    reminders = warnings[1:]
    # Reminders after 60 s, then 120 s and 240 s more: three in 450 s (240 failed attempts).
    assert FIRST_REMINDER_S + 120 + 240 < lasted < FIRST_REMINDER_S + 120 + 240 + 480
    assert len(reminders) == 3, warnings
    assert all("still unavailable after" in m and "rows pending" in m for m in reminders), reminders
    pending = [int(re.search(r"(\d+) rows pending", m).group(1)) for m in reminders]
    assert pending == sorted(pending) and pending[-1] <= 120
    assert sum(1 for r in caplog.records if r.levelno == logging.DEBUG and "failed" in r.getMessage()) > 200

    caplog.clear()
    assert rec.flush()
    ended = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(ended) == 1 and "is back after 7.5 min; 120 rows written late (240 failed writes)" in ended[0], ended
    assert rec.outage.outages == 1 and not rec.outage.active
    assert rec.flush() and not caplog.records[1:]  # no outage, nothing more to say
    rec.close()
    engine.dispose()


def test_an_outage_that_spills_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    upgrade(engine)
    time = FakeTime()
    rec = RunRecorder(engine, batch_size=10_000, max_retries=0, max_pending_rows=10, spill_dir=tmp_path / "spill",
                      sleep=time.sleep, clock=time)
    start_run(rec)
    caplog.set_level(logging.INFO, logger=LOGGER)
    lock = WriteLock(path)
    try:
        for i in range(20):  # each flush over max_pending_rows spills
            for j in range(6):
                _add(rec, i * 6 + j)
            assert not rec.flush()
            time.sleep(1.0)
    finally:
        lock.close()
    assert len(rec.spilled) > 10
    spills = [r.getMessage() for r in caplog.records if "spilled to" in r.getMessage()]
    assert len(spills) == 1, spills
    assert rec.flush()
    back = [r.getMessage() for r in caplog.records if "is back after" in r.getMessage()]
    assert len(back) == 1 and "240 rows written late" in back[0] and "rows spilled and written back" in back[0], back
    rec.close()
    engine.dispose()


def test_an_outage_that_start_run_rides_out_is_said_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The database is locked when the run starts; its retries outlast the lock and nothing else was
    # pending: the outage's end is logged at once, not only after a later flush with rows.
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    upgrade(engine)
    time = FakeTime()
    lock = WriteLock(path)

    def sleep(seconds: float) -> None:  # the first backoff outlasts the lock
        time.sleep(seconds)
        lock.close()

    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.5, spill_dir=tmp_path / "spill", sleep=sleep, clock=time)
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        start_run(rec)
    finally:
        lock.close()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("is unavailable" in m for m in messages), messages
    assert "is back after" in messages[-1] and not rec.outage.active, messages
    rec.close()
    engine.dispose()


def test_where_info_is_not_shown_the_outages_end_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`sim replay` shows warnings only: an outage it rode out said 'is unavailable ...' and never that it ended
    (an INFO line), though every row was stored. The end is a warning there, as its start is."""
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    upgrade(engine)
    time = FakeTime()
    rec = RunRecorder(engine, max_retries=0, spill_dir=tmp_path / "spill", sleep=time.sleep, clock=time)
    start_run(rec)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    lock = WriteLock(path)
    try:
        _add(rec, 0)
        assert not rec.flush()
    finally:
        lock.close()
    assert rec.flush()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [level for level, _ in lines] == [logging.WARNING, logging.WARNING], lines
    assert "is unavailable" in lines[0][1] and "is back after" in lines[1][1] and "2 rows written late" in lines[1][1]
    rec.close()
    engine.dispose()
