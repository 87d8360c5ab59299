"""A failing database loses nothing: rows are retried, kept, spilled on close and replayable.

Failures are real: another SQLite connection holding the write lock, a table
renamed away underneath the recorder, PostgreSQL backends killed with
pg_terminate_backend, and a PostgreSQL database closed to new connections.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from controlplane.storage import RunRecorder, StorageError, get_run, iter_rows, make_engine, upgrade
from controlplane.storage.recorder import OUTAGE_PAUSE_S
from controlplane.storage.models import Decision, MetricSample, Request, WorkerEvent

from .support import (FINISHED, decision_row, metric_row, request_row, spill_beside, start_run,
                      worker_event_row)

TABLES = {"request": Request.__table__, "decision": Decision.__table__, "metric_sample": MetricSample.__table__,
          "worker_event": WorkerEvent.__table__}


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar_one() for name, t in TABLES.items()}


def _distinct_request_ids(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count(func.distinct(Request.__table__.c.request_id)))).scalar_one()


def _add_mixed(rec: RunRecorder, start: int, n: int) -> None:
    for i in range(start, start + n):
        rec.add_request(request_row(i))
        rec.add_decision(decision_row(i))
        rec.add_metric(metric_row(i))
    rec.add_worker_event(worker_event_row(start))


class Sleeper:
    """Injectable sleep that records delays and can heal the database after the n-th wait."""

    def __init__(self, heal_after: int | None = None, heal: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self._heal_after, self._heal = heal_after, heal

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._heal is not None and len(self.delays) == self._heal_after:
            self._heal()


# -- SQLite ------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    """A migrated SQLite file whose engine gives up on a lock after 50 ms instead of 5 s."""
    path = tmp_path / "runs.db"
    engine = make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    upgrade(engine)
    yield engine, path
    engine.dispose()


class WriteLock:
    """Holds SQLite's write lock from a second connection, as a competing writer would."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.conn.execute("COMMIT")
            self.held = False

    def close(self) -> None:
        self.release()
        self.conn.close()


def test_locked_sqlite_is_retried_until_it_frees(sqlite_db: tuple[Engine, Path]) -> None:
    engine, path = sqlite_db
    lock: WriteLock | None = None
    sleeper = Sleeper(heal_after=2, heal=lambda: lock.release())
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.1, sleep=sleeper)
    start_run(rec)
    _add_mixed(rec, 0, 50)
    lock = WriteLock(path)
    try:
        assert rec.flush() is True
    finally:
        lock.close()
    assert sleeper.delays == [0.1, 0.2]
    assert rec.retries == 2 and rec.errors == [] and rec.pending == 0
    assert _counts(engine) == {"request": 50, "decision": 50, "metric_sample": 50, "worker_event": 1}
    rec.close()


def test_rows_are_kept_when_retries_run_out(sqlite_db: tuple[Engine, Path]) -> None:
    engine, path = sqlite_db
    sleeper = Sleeper()
    now = [0.0]
    rec = RunRecorder(engine, batch_size=100, max_retries=2, retry_backoff_s=0.5, sleep=sleeper, clock=lambda: now[0])
    run_id = start_run(rec)
    _add_mixed(rec, 0, 60)
    lock = WriteLock(path)
    try:
        assert rec.flush() is False
        assert sleeper.delays == [0.5, 1.0]
        assert len(rec.errors) == 1
        failure = rec.errors[0]
        assert failure.attempts == 3 and failure.retryable and "database is locked" in failure.error
        assert rec.pending == 181
        assert rec.pending_by_table() == {"request": 60, "decision": 60, "metric_sample": 60, "worker_event": 1,
                                          "iteration": 0, "run_update": 0, "request_verdict": 0}

        _add_mixed(rec, 60, 39)  # 99 requests buffered: below the batch of 100
        assert len(rec.errors) == 1, "a failed flush must not be retried on every append"
        _add_mixed(rec, 99, 61)  # a batch's worth, but the outage's pause has not passed: no attempt (no crawl)
        assert len(rec.errors) == 1 and sleeper.delays == [0.5, 1.0]
        now[0] += OUTAGE_PAUSE_S
        _add_mixed(rec, 160, 100)  # the pause passed: one automatic attempt, without retries or waits
        assert len(rec.errors) == 2 and rec.errors[-1].attempts == 1 and sleeper.delays == [0.5, 1.0]
        assert _counts(engine)["request"] == 0
    finally:
        lock.close()

    assert rec.finish_run(run_id, status="finished", summary={"n": 260}, finished_at=FINISHED, wall_s=1.0,
                          sim_end_s=80.0)
    assert rec.pending == 0
    assert _counts(engine) == {"request": 260, "decision": 260, "metric_sample": 260, "worker_event": 4}
    assert _distinct_request_ids(engine) == 260
    assert get_run(engine, run_id)["status"] == "finished"
    rec.close()


def test_table_dropped_mid_run_is_retried(engine: Engine) -> None:
    """The table vanishes (a botched manual migration) and comes back while the recorder waits."""

    def rename(src: str, dst: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {src} RENAME TO {dst}"))

    sleeper = Sleeper(heal_after=1, heal=lambda: rename("metric_sample_away", "metric_sample"))
    rec = RunRecorder(engine, max_retries=2, retry_backoff_s=0.01, sleep=sleeper)
    start_run(rec)
    _add_mixed(rec, 0, 25)
    rename("metric_sample", "metric_sample_away")
    assert rec.flush() is True
    assert rec.retries == 1 and sleeper.delays == [0.01]
    assert _counts(engine) == {"request": 25, "decision": 25, "metric_sample": 25, "worker_event": 1}
    rec.close()


def test_close_spills_next_to_sqlite_file_and_replays(sqlite_db: tuple[Engine, Path]) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, max_retries=1, retry_backoff_s=0.0, sleep=Sleeper())
    run_id = start_run(rec)
    _add_mixed(rec, 0, 30)
    rec.add_decision(decision_row(99, payload=None, is_error=True))
    lock = WriteLock(path)
    try:
        assert rec.finish_run(run_id, status="failed", summary={"why": "test"}, finished_at=FINISHED, wall_s=2.0,
                              sim_end_s=15.0) is False
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()

    spill_path = spill_beside(info, path)
    assert "93 rows could not be written" in str(info.value) and "database is locked" in str(info.value)
    lines = spill_path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "controlplane-spill" and header["writer"] == rec.writer
    entries = [json.loads(line) for line in lines[1:]]
    assert len(entries) == 93
    assert entries[-1] == {"table": "run_update", "row": {"id": run_id, "status": "failed", "summary": {"why": "test"},
                                                         "finished_at": FINISHED.isoformat(), "wall_s": 2.0,
                                                         "sim_end_s": 15.0}, "seq": 1}
    decision = next(e["row"] for e in entries if e["table"] == "decision")
    assert decision["payload"] == {"worker": "w0", "load": [1, 2]}, "JSON is stored decoded, for people"
    assert rec.pending == 0
    assert _counts(engine)["request"] == 0

    replayer = RunRecorder(engine)
    assert replayer.replay_spill(spill_path) == 93
    replayer.close()
    assert _counts(engine) == {"request": 30, "decision": 31, "metric_sample": 30, "worker_event": 1}
    run = get_run(engine, run_id)
    assert (run["status"], run["finished_at"], run["summary"]) == ("failed", FINISHED, {"why": "test"})
    decisions = list(iter_rows(engine, run_id, "decisions"))
    assert decisions[0]["payload"] == {"worker": "w0", "load": [1, 2]}
    assert [d for d in decisions if d["is_error"]][0]["payload"] is None


def test_close_waits_through_an_outage_and_writes_everything(sqlite_db: tuple[Engine, Path]) -> None:
    """A run that ends while its database is away (here: locked) is written whole once it is back
    within ``close_wait_s``, not spilled after one flush's retries."""
    engine, path = sqlite_db
    lock: WriteLock | None = None
    # sleeps: finish_run's retry, close's flush retry, then the close's first wait: the lock goes there
    sleeper = Sleeper(heal_after=3, heal=lambda: lock.release())
    rec = RunRecorder(engine, max_retries=1, retry_backoff_s=0.0, close_wait_s=40.0, sleep=sleeper)
    run_id = start_run(rec)
    _add_mixed(rec, 0, 20)
    lock = WriteLock(path)
    try:
        assert rec.finish_run(run_id, status="finished", summary={"n": 20}, finished_at=FINISHED, wall_s=1.0,
                              sim_end_s=10.0) is False
        rec.close()  # no StorageError: nothing spilled
    finally:
        lock.close()
    assert sleeper.delays == [0.0, 0.0, 5.0], "one wait of close_wait_s / 8, then the flush went through"
    assert not list(path.parent.glob("controlplane-spill-*")), "nothing spilled"
    assert _counts(engine) == {"request": 20, "decision": 20, "metric_sample": 20, "worker_event": 1}
    assert get_run(engine, run_id)["status"] == "finished"


def test_close_waits_at_most_close_wait_s_then_spills(sqlite_db: tuple[Engine, Path]) -> None:
    engine, path = sqlite_db
    sleeper = Sleeper()
    rec = RunRecorder(engine, max_retries=0, close_wait_s=16.0, sleep=sleeper)
    start_run(rec)
    rec.add_request(request_row(1))
    lock = WriteLock(path)
    try:
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    assert sleeper.delays == [2.0] * 8, "close_wait_s in eight waits, each followed by a flush"
    assert "load them with `controlplane db load-spill" in str(info.value)
    spill_beside(info, path).unlink()


def test_close_does_not_wait_for_what_no_retry_mends(engine: Engine, tmp_path: Path) -> None:
    """A row refused for good is no outage: nothing to wait for (it goes to a refused file)."""
    sleeper = Sleeper()
    rec = RunRecorder(engine, close_wait_s=60.0, sleep=sleeper, spill_dir=tmp_path)
    start_run(rec)
    rec.add_request(request_row(1))
    rec.add_request(request_row(1))
    rec.close()
    assert sleeper.delays == [] and rec.refused.count == 1


def test_spill_goes_to_given_dir(sqlite_db: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, max_retries=0, sleep=Sleeper(), spill_dir=tmp_path / "spills")
    start_run(rec)
    rec.add_request(request_row(1))
    lock = WriteLock(path)
    try:
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    assert info.value.spill_path.parent == tmp_path / "spills"


def test_a_spill_its_folder_refuses_goes_to_the_working_directory_before_the_temp_directory(
        sqlite_db: tuple[Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/configuration.md: "next to a SQLite file, else in the working directory, else the temp directory";
    `spill.default_directories` tried the preferred folder, then the temp directory only."""
    from controlplane.storage import spill

    engine, path = sqlite_db
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert spill.default_directories(path.parent) == [path.parent, work, Path(tempfile.gettempdir())]
    assert spill.default_directories(None) == [work, Path(tempfile.gettempdir())]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the spill folder would be")
    rec = RunRecorder(engine, max_retries=0, sleep=Sleeper(), spill_dir=blocked)
    start_run(rec)
    rec.add_request(request_row(1))
    lock = WriteLock(path)
    try:
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    assert info.value.spill_path.parent == work, info.value.spill_path


def test_rows_no_spill_file_could_take_are_counted_by_run_with_the_database_error(
        sqlite_db: tuple[Engine, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file-size limit (`ulimit -f`) every spill folder hits: the close's error was the spill's alone ("could
    not write spill file ... File too large"), without how many rows of which run were lost, or why the
    database did not take them."""
    import resource

    engine, path = sqlite_db
    monkeypatch.chdir(tmp_path)
    rec = RunRecorder(engine, max_retries=0, sleep=Sleeper(), close_wait_s=0, max_pending_rows=30)
    run_id = start_run(rec)
    lock = WriteLock(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        _add_mixed(rec, 0, 20)  # (61 rows, 30 of them past max_pending_rows: no spill takes them either)
        assert not rec.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, hard))
        _add_mixed(rec, 20, 10)
        assert not rec.flush()
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        lock.close()
    said = str(info.value)
    assert said.startswith(f"31 rows of run {run_id} (10 request, 10 decision, 10 metric_sample, 1 worker_event) "
                           f"could not be written to sqlite:///{path} (OperationalError: database is locked), nor "
                           "saved to a spill file, so they are lost: could not write spill file "), said
    assert "File too large" in said and info.value.spill_path is None
    earlier = list(tmp_path.glob("controlplane-spill-*"))  # (the overflow's, before the limit: kept, and named)
    assert len(earlier) == 1 and said.endswith(f"; the 61 rows spilled before are in {earlier[0]}: load them with "
                                               "`controlplane db load-spill`"), said


def test_replay_refuses_rows_of_unknown_run(sqlite_db: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, max_retries=0, sleep=Sleeper(), spill_dir=tmp_path)
    start_run(rec)
    rec.add_request(request_row(1))
    lock = WriteLock(path)
    try:
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    with pytest.raises(StorageError, match=r"run\(s\) \[1\], not present in sqlite:///.*other.db"):
        RunRecorder(other).replay_spill(info.value.spill_path)
    other.dispose()


def test_replay_refuses_other_files(sqlite_engine: Engine, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.jsonl"
    bogus.write_text('{"hello": "world"}\n')
    with pytest.raises(StorageError, match="not a controlplane spill file"):
        RunRecorder(sqlite_engine).replay_spill(bogus)


def test_bad_data_is_not_retried_and_holds_nothing_back(engine: Engine, tmp_path: Path) -> None:
    """A duplicate request id can never succeed: no backoff; the other rows are written, the
    duplicate goes to a refused file (tests/storage/test_refused.py), and close() has nothing left."""
    sleeper = Sleeper()
    rec = RunRecorder(engine, sleep=sleeper)
    start_run(rec)
    rec.add_request(request_row(1))
    assert rec.flush()
    rec.add_request(request_row(1))
    rec.add_metric(metric_row(1))
    assert rec.flush()
    assert sleeper.delays == [] and rec.errors == [] and rec.pending == 0
    assert _counts(engine)["metric_sample"] == 1 and rec.refused.count == 1
    rec.close(spill_dir=tmp_path)
    rec.refused.paths[0].unlink()


# -- PostgreSQL --------------------------------------------------------------


@pytest.fixture
def pg_app_engine(pg_url: str) -> Iterator[tuple[Engine, str]]:
    """An engine without pre-ping whose connections are tagged with a unique application_name."""
    app = f"cp-recorder-{uuid.uuid4().hex[:8]}"
    engine = make_engine(pg_url, pool_pre_ping=False, connect_args={"application_name": app})
    upgrade(engine)
    yield engine, app
    engine.dispose()


def _terminate(pg_admin: Engine, app: str) -> int:
    with pg_admin.connect() as conn:
        return len(conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"
        ), {"app": app}).all())


def _allow_connections(pg_admin: Engine, url: str, allow: bool) -> None:
    database = make_url(url).database
    with pg_admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allow else "false"}'))


@pytest.mark.postgres
def test_killed_postgres_connection_is_retried(pg_app_engine: tuple[Engine, str], pg_admin: Engine) -> None:
    engine, app = pg_app_engine
    sleeper = Sleeper()
    rec = RunRecorder(engine, max_retries=3, retry_backoff_s=0.01, sleep=sleeper)
    start_run(rec)
    _add_mixed(rec, 0, 100)
    assert rec.flush()
    _add_mixed(rec, 100, 100)
    assert _terminate(pg_admin, app) >= 1
    assert rec.flush() is True
    assert rec.retries >= 1 and sleeper.delays[0] == 0.01
    assert _counts(engine) == {"request": 200, "decision": 200, "metric_sample": 200, "worker_event": 2}
    assert _distinct_request_ids(engine) == 200
    rec.close()


@pytest.mark.postgres
def test_pre_ping_engine_survives_killed_connection(pg_url: str, pg_admin: Engine) -> None:
    app = f"cp-preping-{uuid.uuid4().hex[:8]}"
    engine = make_engine(pg_url, connect_args={"application_name": app})
    upgrade(engine)
    rec = RunRecorder(engine, sleep=Sleeper())
    start_run(rec)
    assert _terminate(pg_admin, app) >= 1
    _add_mixed(rec, 0, 10)
    assert rec.flush() and rec.retries == 0
    rec.close()
    engine.dispose()


@pytest.mark.postgres
def test_postgres_outage_spill_and_replay(
    pg_app_engine: tuple[Engine, str], pg_admin: Engine, pg_url: str, tmp_path: Path
) -> None:
    engine, app = pg_app_engine
    rec = RunRecorder(engine, max_retries=2, retry_backoff_s=0.01, sleep=Sleeper())
    run_id = start_run(rec)
    _add_mixed(rec, 0, 40)
    assert rec.flush()
    _add_mixed(rec, 40, 40)
    _allow_connections(pg_admin, pg_url, False)
    try:
        _terminate(pg_admin, app)
        assert rec.flush() is False
        assert rec.errors[-1].attempts == 3 and rec.errors[-1].retryable
        assert rec.pending == 121
        with pytest.raises(StorageError) as info:
            rec.close(spill_dir=tmp_path)
    finally:
        _allow_connections(pg_admin, pg_url, True)
    assert _counts(engine)["request"] == 40
    assert RunRecorder(engine).replay_spill(info.value.spill_path) == 121
    assert _counts(engine) == {"request": 80, "decision": 80, "metric_sample": 80, "worker_event": 2}
    assert _distinct_request_ids(engine) == 80
    assert get_run(engine, run_id)["status"] == "running"
