"""A row the database refuses for good holds back no other row (controlplane.storage.refused,
controlplane.storage.isolate): the flush commits everything else, the refused row goes to a
refused file, later flushes keep working and close() does not raise. Real SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from controlplane.storage import RunRecorder, spill
from controlplane.storage.models import Decision, MetricSample, Request, Run, WorkerEvent

from .support import FINISHED, decision_row, metric_row, request_row, start_run, worker_event_row
from .test_failures import Sleeper
from .test_outage import LostAcknowledgement

TABLES = {"request": Request.__table__, "decision": Decision.__table__, "metric_sample": MetricSample.__table__,
          "worker_event": WorkerEvent.__table__}


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar_one() for name, t in TABLES.items()}


def _request_ids(engine: Engine) -> list[str]:
    """The stored request ids in the order the database took them."""
    t = Request.__table__
    with engine.connect() as conn:
        return list(conn.scalars(select(t.c.request_id).order_by(t.c.id)))


def _refused_file(rec: RunRecorder) -> Path:
    assert len(rec.refused.paths) == 1
    path = rec.refused.paths[0]
    assert path.name.startswith("controlplane-refused-run") and path.exists()
    return path


def _first_request_written(engine: Engine, tmp_path: Path, **settings: Any) -> RunRecorder:
    """A recorder whose run holds request ``req-000001`` already (repeating it is refused)."""
    rec = RunRecorder(engine, spill_dir=tmp_path, **settings)
    start_run(rec)
    rec.add_request(request_row(1))
    assert rec.flush()
    return rec


def test_a_repeated_request_id_refuses_that_row_only(engine: Engine, tmp_path: Path, caplog) -> None:
    """One duplicate among many rows of four tables and a finish_run: all else lands, in order."""
    rec = RunRecorder(engine, spill_dir=tmp_path)
    run_id = start_run(rec)
    for i in range(10):
        rec.add_request(request_row(i))
    assert rec.flush()
    for i in range(10, 50):
        rec.add_request(request_row(i))
        if i == 30:
            rec.add_request(request_row(5, tenant="again"))  # id req-000005 finished before: refused
        rec.add_decision(decision_row(i))
        rec.add_metric(metric_row(i))
    rec.add_worker_event(worker_event_row(1))
    with caplog.at_level(logging.ERROR, logger="controlplane.storage.recorder"):
        assert rec.finish_run(run_id, status="finished", summary={"ok": 1}, finished_at=FINISHED, wall_s=1.0,
                              sim_end_s=2.0)
    assert _counts(engine) == {"request": 50, "decision": 40, "metric_sample": 40, "worker_event": 1}
    assert _request_ids(engine) == [f"req-{i:06d}" for i in range(50)]  # same order, the repeat left out
    with engine.connect() as conn:
        assert conn.execute(select(Run.__table__.c.status)).scalar_one() == "finished"
    assert rec.pending == 0 and rec.errors == [] and rec.written["request"] == 50
    assert rec.refused.count == 1 and rec.refused.request_ids == ["req-000005"]
    path = _refused_file(rec)
    assert path.parent == tmp_path
    assert [(t, r["request_id"], r["tenant"]) for t, r in spill.read_spill(path)] == [("request", "req-000005",
                                                                                         "again")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per isolation
    assert "1 row(s) of table request" in errors[0] and "repeats id 'req-000005'" in errors[0]
    assert "must be unique within a run" in errors[0] and str(path) in errors[0]
    assert "IntegrityError" in errors[0]

    # The daemon's case: the recorder goes on, later flushes land.
    for i in range(50, 60):
        rec.add_request(request_row(i))
        rec.add_metric(metric_row(i))
    assert rec.flush()
    assert _counts(engine)["request"] == 60 and _counts(engine)["metric_sample"] == 50
    rec.close()  # nothing pending: the refused row is saved, not lost
    assert rec.refused.count == 1


def test_a_repeat_within_one_flush_keeps_the_first(engine: Engine, tmp_path: Path) -> None:
    rec = RunRecorder(engine, spill_dir=tmp_path)
    start_run(rec)
    for i in range(20):
        rec.add_request(request_row(i))
        rec.add_decision(decision_row(i))
    rec.add_request(request_row(3, tenant="second"))
    rec.add_request(request_row(7, tenant="second"))
    assert rec.flush()
    assert _request_ids(engine) == [f"req-{i:06d}" for i in range(20)]
    assert _counts(engine)["decision"] == 20
    assert rec.refused.request_ids == ["req-000003", "req-000007"]
    rows = [r for _, r in spill.read_spill(_refused_file(rec))]
    assert [(r["request_id"], r["tenant"]) for r in rows] == [("req-000003", "second"), ("req-000007", "second")]
    assert "repeats id 'req-000003', 'req-000007'" in rec.refused.warning()
    rec.close()


def test_the_refused_file_loads_once_mended(engine: Engine, tmp_path: Path) -> None:
    """The refused file has no flush numbers: replay_spill skips none of its rows."""
    rec = _first_request_written(engine, tmp_path)
    rec.add_request(request_row(1))
    assert rec.flush()
    path = _refused_file(rec)
    assert all('"seq"' not in line for line in path.read_text().splitlines())
    mended = tmp_path / "mended.jsonl"
    mended.write_text(path.read_text().replace('"req-000001"', '"req-000001-b"'))
    assert rec.replay_spill(mended) == 1
    assert _request_ids(engine) == ["req-000001", "req-000001-b"]
    assert rec.replay_spill(path) == 0  # not mended: refused again, to a new refused file
    assert rec.refused.count == 2 and len(rec.refused.paths) == 2
    rec.close()


def test_a_refused_row_of_a_spill_file_is_set_aside_too(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Rows spilled during an outage, then refused when written back: the others land."""
    rec = _first_request_written(sqlite_engine, tmp_path)
    for i in (2, 1, 3):
        rec.add_request(request_row(i))
    rec._take_buffers()
    rec._backlog.spill([tmp_path], source="test", writer=rec.writer)
    assert rec.flush()
    assert _request_ids(sqlite_engine) == ["req-000001", "req-000002", "req-000003"]
    assert rec.refused.request_ids == ["req-000001"] and rec.spilled == []
    rec.close()


@pytest.mark.postgres
def test_a_value_a_postgres_column_refuses_is_set_aside(pg_engine: Engine, tmp_path: Path) -> None:
    """DataError (an integer out of range) is refused like a duplicate; the message names the table."""
    rec = RunRecorder(pg_engine, spill_dir=tmp_path)
    start_run(rec)
    rec.add_request(request_row(1))
    rec.add_metric(metric_row(1))
    rec.add_worker_event(worker_event_row(1, time_s=1.0))
    rec.add_request(request_row(2, prompt_tokens=2**40))
    assert rec.flush()
    assert _request_ids(pg_engine) == ["req-000001"]
    assert _counts(pg_engine)["metric_sample"] == 1 and _counts(pg_engine)["worker_event"] == 1
    assert rec.refused.count == 1 and "DataError" in rec.refused.errors["request"]
    warning = rec.refused.warning()
    assert "request 'req-000002' refused (DataError" in warning and "unique" not in warning  # not a repeat
    rec.close()


@pytest.mark.postgres
def test_a_nul_in_a_request_s_text_is_named_as_the_cause(pg_engine: Engine, tmp_path: Path, caplog) -> None:
    """PostgreSQL stores no NUL in text: the warning says so, not that the trace repeats an id."""
    rec = RunRecorder(pg_engine, spill_dir=tmp_path)
    start_run(rec)
    rec.add_request(request_row(1))
    rec.add_request({**request_row(2), "request_id": "nul\x00id"})
    rec.add_request({**request_row(3), "tenant": "t\x00"})
    with caplog.at_level(logging.ERROR, logger="controlplane.storage.recorder"):
        assert rec.flush()
    assert _request_ids(pg_engine) == ["req-000001"]
    warning = rec.refused.warning()
    assert "request 'nul\\x00id', 'req-000003' holds text no database column stores (a NUL character" in warning
    assert "unique" not in warning and "repeats" not in warning
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "holds text no database column stores" in logged and "repeats" not in logged
    rec.close()


def test_a_refusal_s_cause_is_the_row_s_text_the_database_s_word_or_else_its_message() -> None:
    from controlplane.storage.refused import DUPLICATE, OTHER, SEQUENCE, TEXT, cause

    assert cause({"request_id": "a"}, "IntegrityError: UNIQUE constraint failed: request.run_id") == DUPLICATE
    assert cause({"request_id": "a"}, "IntegrityError: duplicate key value violates unique constraint") == DUPLICATE
    # (the constraint it names: every unique violation was blamed on a repeated request id)
    assert cause({"request_id": "a"}, 'IntegrityError: duplicate key value violates unique constraint '
                                      '"uq_request_run_id_request_id"') == DUPLICATE
    assert cause({"request_id": "a"}, "IntegrityError: UNIQUE constraint failed: request.run_id, "
                                      "request.request_id") == DUPLICATE
    assert cause({"request_id": "a"}, 'IntegrityError: duplicate key value violates unique constraint '
                                      '"pk_request"') == SEQUENCE
    assert cause({"request_id": "a"}, "IntegrityError: UNIQUE constraint failed: request.id") == SEQUENCE
    assert cause({"request_id": "a"}, 'IntegrityError: duplicate key value violates unique constraint '
                                      '"ix_other"') == OTHER
    assert cause({"request_id": "a\ud800"}, "UnicodeEncodeError: surrogates not allowed") == TEXT
    assert cause({"request_id": "a", "tenant": "x\x00"}, "DataError: NUL") == TEXT
    assert cause({"request_id": "a"}, "DataError: integer out of range") == OTHER


@pytest.mark.parametrize("committed", [True, False])
def test_an_isolating_commit_whose_outcome_was_lost_refuses_each_row_once(
    engine: Engine, tmp_path: Path, committed: bool
) -> None:
    """The commit that left the refused row out was lost: the writer mark tells whether it
    happened (its refused rows are refused) or not (it is done again): one refused row either way."""
    rec = _first_request_written(engine, tmp_path, max_retries=2, sleep=Sleeper())
    for i in (2, 1, 3):
        rec.add_request(request_row(i))
        rec.add_metric(metric_row(i))
    rec.engine = LostAcknowledgement(engine, n=1, committed=committed)
    assert rec.flush()
    rec.engine = engine
    assert rec.retries == 1
    assert _request_ids(engine) == ["req-000001", "req-000002", "req-000003"]
    assert _counts(engine)["metric_sample"] == 3
    assert rec.refused.count == 1
    assert [r["request_id"] for _, r in spill.read_spill(_refused_file(rec))] == ["req-000001"]
    rec.close()


def _summary(engine: Engine, run_id: int) -> dict:
    with engine.connect() as conn:
        return conn.execute(select(Run.__table__.c.summary).where(Run.__table__.c.id == run_id)).scalar_one()


def test_a_run_that_lost_rows_says_so_in_its_summary(engine: Engine, tmp_path: Path) -> None:
    """It read as complete (`runs list`: every request completed) with rows missing; its summary counts them."""
    rec = _first_request_written(engine, tmp_path)
    rec.add_request(request_row(1))
    rec.add_request(request_row(2))
    assert rec.finish_run(rec.run_id, status="finished", summary={"num_completed": 3}, finished_at=FINISHED,
                          wall_s=1.0, sim_end_s=2.0)
    assert "rows_refused" not in _summary(engine, rec.run_id)
    rec.close()
    assert _summary(engine, rec.run_id) == {"num_completed": 3, "rows_refused": {"request": 1}}
    assert rec.refused.by_run == {rec.run_id: {"request": 1}}


@pytest.mark.postgres
def test_an_id_sequence_behind_its_table_is_named_with_its_fix_not_a_repeated_id(pg_engine: Engine, tmp_path: Path,
                                                                                 caplog) -> None:
    """`ALTER SEQUENCE request_id_seq RESTART WITH 1`, then a run: every refusal of pk_request said "request ids must
    be unique within a run; the trace (or client) repeats id ..." of ids it never repeated."""
    from controlplane.storage.load_spill import load_spill

    rec = RunRecorder(pg_engine, spill_dir=tmp_path)
    run_id = start_run(rec)
    for i in range(200):
        rec.add_request(request_row(i))
    assert rec.flush()
    with pg_engine.begin() as conn:
        conn.execute(text("ALTER SEQUENCE request_id_seq RESTART WITH 1"))
    for i in range(200, 203):  # (each try takes an id, refused or not: 3 rows' tries stay below 200)
        rec.add_request(request_row(i))
    with caplog.at_level(logging.ERROR, logger="controlplane.storage.recorder"):
        assert rec.finish_run(run_id, status="finished", summary={"num_completed": 203}, finished_at=FINISHED,
                              wall_s=1.0, sim_end_s=2.0)
    assert rec.refused.count == 3 and rec.refused.causes == {"sequence": 3}
    fix = "SELECT setval(pg_get_serial_sequence('request', 'id'), (SELECT max(id) FROM request))"
    for said in (rec.refused.warning(), " ".join(r.getMessage() for r in caplog.records)):
        assert "the request table's id sequence is behind its stored ids" in said and f"`{fix}`" in said, said
        assert "repeats id" not in said and "repeated request id a new" not in said and "must be unique" not in said
    assert "controlplane db load-spill" in rec.refused.warning()
    rec.close()
    assert _summary(pg_engine, run_id)["rows_refused"] == {"request": 3}
    with pg_engine.begin() as conn:  # the fix the message gives, then its rows loaded: the run is whole
        conn.execute(text(fix))
    url = pg_engine.url.render_as_string(hide_password=False)
    assert load_spill(url, _refused_file(rec)) == 3
    assert sorted(_request_ids(pg_engine)) == [f"req-{i:06d}" for i in range(203)]
    assert _summary(pg_engine, run_id) == {"num_completed": 203}


def test_the_load_spill_commands_suggested_are_quoted_for_a_shell(tmp_path):
    """A spill or refused file in a folder with a space: the suggested command broke on it when pasted."""
    from controlplane.storage.refused import Refusal, refusal_message

    path = tmp_path / "my runs" / "x.refused.jsonl"
    assert f"`controlplane db load-spill '{path}'`" in spill.load_advice(path, "sqlite:///x.db")
    assert f"`controlplane db load-spill '{path}'`" in refusal_message(
        Refusal(), path)
