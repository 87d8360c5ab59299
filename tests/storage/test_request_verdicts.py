"""Guardian verdicts after the reply as updates of request rows (controlplane.storage.request_verdicts):
written after their rows, kept through an outage, spilled and replayed, and written beside a refused row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.storage import RunRecorder, StorageError, iter_rows

from .support import FINISHED, request_row, spill_beside, start_run
from .test_failures import Sleeper, WriteLock, sqlite_db  # noqa: F401 (a fixture)

RETRACTED = "retracted: blocked after the reply by judge: score 0.99 >= 0.5"


def _verdicts(engine: Engine, run_id: int) -> dict[str, tuple[str | None, str | None]]:
    return {r["request_id"]: (r["guardian_verdict"], r["reason"]) for r in iter_rows(engine, run_id, "requests")}


def test_a_verdict_updates_its_row_in_the_same_flush_or_a_later_one(engine: Engine) -> None:
    rec = RunRecorder(engine)
    run_id = start_run(rec)
    rec.add_request(request_row(0, guardian_verdict="pending"))
    rec.add_request(request_row(1, guardian_verdict="pending", reason="kept"))
    rec.add_request_verdict("req-000000", "block", RETRACTED)  # its row is in the same flush
    assert rec.pending_by_table()["request_verdict"] == 1
    assert rec.flush()
    rec.add_request_verdict("req-000001", "pass")  # its row was written by an earlier flush
    assert rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    rec.close()
    assert _verdicts(engine, run_id) == {"req-000000": ("block", RETRACTED), "req-000001": ("pass", "kept")}


def test_verdicts_wait_through_an_outage_and_are_spilled_and_replayed_after_their_rows(
        sqlite_db: tuple[Engine, Path]) -> None:
    engine, path = sqlite_db
    rec = RunRecorder(engine, max_retries=0, sleep=Sleeper())
    run_id = start_run(rec)
    lock = WriteLock(path)
    try:
        rec.add_request(request_row(0, guardian_verdict="pending"))
        rec.add_request_verdict("req-000000", "block", RETRACTED)
        assert rec.flush() is False
        assert rec.pending_by_table()["request_verdict"] == 1
        with pytest.raises(StorageError) as info:
            rec.close()
    finally:
        lock.close()
    spill_path = spill_beside(info, path)
    entries = [json.loads(line) for line in spill_path.read_text().splitlines()[1:]]
    assert [e["table"] for e in entries] == ["request", "request_verdict"]
    assert entries[1]["row"] == {"run_id": run_id, "request_id": "req-000000", "guardian_verdict": "block",
                                 "reason": RETRACTED}
    replayer = RunRecorder(engine)
    assert replayer.replay_spill(spill_path) == 2
    replayer.close()
    assert _verdicts(engine, run_id) == {"req-000000": ("block", RETRACTED)}


def test_verdicts_are_written_beside_a_refused_row(engine: Engine, tmp_path: Path) -> None:
    rec = RunRecorder(engine, spill_dir=tmp_path)
    run_id = start_run(rec)
    rec.add_request(request_row(1, guardian_verdict="pending"))
    assert rec.flush()
    rec.add_request(request_row(2, guardian_verdict="pending"))
    rec.add_request(request_row(1))  # a repeated id: refused, the rest of the flush goes in
    rec.add_request_verdict("req-000001", "pass")
    rec.add_request_verdict("req-000002", "block", RETRACTED)
    assert rec.flush()
    assert rec.refused.count == 1
    rec.close()
    assert _verdicts(engine, run_id) == {"req-000001": ("pass", None), "req-000002": ("block", RETRACTED)}
