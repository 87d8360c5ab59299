"""Read side: run listings, ordered streaming, CSV/JSON exports, decision counts."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3

import pytest
from sqlalchemy import Engine

from controlplane.storage import (
    EXPORT_COLUMNS,
    RunRecorder,
    decision_counts,
    export_rows,
    get_run,
    iter_request_rows,
    iter_rows,
    list_runs,
)
from controlplane.storage.rows import SPECS

from .support import FINISHED, decision_row, metric_row, request_row, start_run, worker_event_row


@pytest.fixture
def recorded(engine: Engine) -> tuple[Engine, int]:
    """A finished run whose rows were appended out of arrival order."""
    with RunRecorder(engine, batch_size=3) as rec:
        run_id = start_run(rec)
        for i in (3, 1, 2, 0):
            rec.add_request(request_row(i))
        rec.add_request(request_row(5, request_id="b-tie", arrival_s=0.5))
        rec.add_request(request_row(6, request_id="a-tie", arrival_s=0.5, status="rejected", reason='quota, "hard"',
                                    first_token_s=None, finish_s=None, scheduled_s=None, output_tokens=0))
        rec.add_decision(decision_row(0))
        rec.add_decision(decision_row(1))
        rec.add_decision(decision_row(2, hook="admit", plugin="quota", action="reject"))
        rec.add_decision(decision_row(3, is_error=True, action=None, payload=None))
        rec.add_metric(metric_row(0))
        rec.add_worker_event(worker_event_row(0, detail={"note": "line1\nline2"}))
        rec.finish_run(run_id, status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=3.0)
    return engine, run_id


def test_export_columns_cover_every_table_column() -> None:
    tables = {"requests": "request", "decisions": "decision", "metrics": "metric_sample",
              "worker_events": "worker_event"}
    for what, table in tables.items():
        assert sorted(EXPORT_COLUMNS[what]) == sorted(SPECS[table].columns), what
    assert EXPORT_COLUMNS["requests"][:5] == ("request_id", "arrival_s", "first_token_s", "finish_s", "status")


def test_list_runs_newest_first(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        ids = [start_run(rec, name=f"run{i}") for i in range(3)]
    runs = list_runs(engine)
    assert [r["id"] for r in runs] == ids[::-1]
    assert runs[0]["name"] == "run2" and runs[0]["mode"] == "sim"
    assert [r["id"] for r in list_runs(engine, limit=2)] == ids[:0:-1]


def test_list_runs_and_sweeps_of_one_status(engine: Engine) -> None:
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from controlplane.storage import list_sweeps
    from controlplane.storage.models import Sweep

    with RunRecorder(engine) as rec:
        ids = [start_run(rec, name=f"run{i}") for i in range(3)]
        rec.finish_run(ids[1], status="finished", summary={}, finished_at=FINISHED, wall_s=1.0, sim_end_s=3.0)
    assert [r["id"] for r in list_runs(engine, status="running")] == [ids[2], ids[0]]
    assert [r["id"] for r in list_runs(engine, status="finished")] == [ids[1]]
    assert list_runs(engine, status="crashed") == []
    with engine.begin() as conn:
        for status in ("crashed", "finished"):
            conn.execute(insert(Sweep.__table__).values(name=status, kind="search", status=status, spec={},
                                                        spec_hash=status, created_at=datetime.now(timezone.utc)))
    assert [s["name"] for s in list_sweeps(engine, status="crashed")] == ["crashed"]
    assert [s["name"] for s in list_sweeps(engine)] == ["finished", "crashed"]


def test_get_run_missing_names_run_and_database(engine: Engine) -> None:
    with pytest.raises(LookupError) as info:
        get_run(engine, 42)
    message = str(info.value)
    assert message.startswith("run 42 not found in ")
    assert engine.url.render_as_string(hide_password=True) in message
    with pytest.raises(LookupError, match="run 42 not found"):
        iter_request_rows(engine, 42)


def test_request_rows_stream_in_arrival_order(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    rows = iter_request_rows(engine, run_id)
    ids = [r["request_id"] for r in rows]
    assert ids == ["req-000000", "a-tie", "b-tie", "req-000001", "req-000002", "req-000003"]


def test_iter_rows_rejects_unknown_kind(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    with pytest.raises(ValueError, match=r"unknown row kind 'bananas'; expected one of \['requests'"):
        iter_rows(engine, run_id, "bananas")


def test_csv_export(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    out = io.StringIO(newline="")
    assert export_rows(engine, run_id, "requests", "csv", out) == 6
    text = out.getvalue()
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS["requests"])
    assert text.splitlines()[0].startswith("request_id,arrival_s,first_token_s,finish_s,status,")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["request_id"] for r in rows][:3] == ["req-000000", "a-tie", "b-tie"]
    first = rows[0]
    assert (first["arrival_s"], first["first_token_s"], first["finish_s"], first["status"]) == (
        "0.0", "0.5", "2.5", "completed")
    assert first["ttft_s"] == "0.5" and first["tpot_s"] == "0.05" and first["cache_hit"] == ""
    rejected = rows[1]
    assert rejected["reason"] == 'quota, "hard"' and rejected["first_token_s"] == "" and rejected["ttft_s"] == ""

    out = io.StringIO(newline="")
    assert export_rows(engine, run_id, "decisions", "csv", out) == 4
    decisions = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(decisions[0]) == list(EXPORT_COLUMNS["decisions"])
    assert json.loads(decisions[0]["payload"]) == {"worker": "w0", "load": [1, 2]}
    assert [d["is_error"] for d in decisions] == ["false", "false", "false", "true"]
    assert decisions[3]["payload"] == "" and decisions[3]["action"] == ""

    out = io.StringIO(newline="")
    export_rows(engine, run_id, "worker_events", "csv", out)
    event = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert json.loads(event["detail"]) == {"note": "line1\nline2"}


def test_json_and_jsonl_export(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    out = io.StringIO()
    assert export_rows(engine, run_id, "requests", "json", out) == 6
    rows = json.loads(out.getvalue())
    assert list(rows[0]) == list(EXPORT_COLUMNS["requests"])
    assert rows[1]["request_id"] == "a-tie" and rows[1]["first_token_s"] is None
    assert rows[0]["prompt_tokens"] == 100 and isinstance(rows[0]["prompt_tokens"], int)

    out = io.StringIO()
    assert export_rows(engine, run_id, "metrics", "jsonl", out) == 1
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"time_s": 0.0, "name": "queue_depth", "value": 0.0, "labels": {"worker": "w0"}}
    ]


def test_empty_exports(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
    out = io.StringIO()
    assert export_rows(engine, run_id, "decisions", "json", out) == 0
    assert json.loads(out.getvalue()) == []
    out = io.StringIO()
    export_rows(engine, run_id, "decisions", "csv", out)
    assert out.getvalue() == ",".join(EXPORT_COLUMNS["decisions"]) + "\n"


def test_export_rejects_unknown_format(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        export_rows(engine, run_id, "requests", "xml", io.StringIO())


def test_decision_counts(recorded: tuple[Engine, int]) -> None:
    engine, run_id = recorded
    assert decision_counts(engine, run_id) == [
        {"hook": "admit", "plugin": "quota", "action": "reject", "count": 1, "errors": 0},
        {"hook": "route", "plugin": "least_loaded", "action": None, "count": 1, "errors": 1},
        {"hook": "route", "plugin": "least_loaded", "action": "route", "count": 2, "errors": 0},
    ]


def test_streaming_large_run_in_chunks(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        for i in range(4500):
            rec.add_request(request_row(4500 - i))
    arrivals = [r["arrival_s"] for r in iter_request_rows(engine, run_id)]
    assert len(arrivals) == 4500 and arrivals == sorted(arrivals)


def test_reading_a_database_without_runs_says_so_and_makes_no_file(tmp_path):
    """`get_run(make_engine("sqlite:///typo.db"), 1)` raised SQL's "no such table: run" and left an empty typo.db."""
    from controlplane.storage import StorageError, get_run, list_runs, make_engine

    missing = tmp_path / "typo.db"
    with pytest.raises(StorageError, match=r"no such file .*typo\.db.*, so no run is stored there"):
        get_run(make_engine(f"sqlite:///{missing}"), 1)
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # (a database, but not one of runs)
    with pytest.raises(StorageError, match="holds no controlplane runs"):
        list_runs(make_engine(f"sqlite:///{empty}"))


def test_rows_of_a_summary_only_sweep_run_are_refused_saying_why(tmp_path):
    """`export_rows` of a `record: summary` run wrote a bare header: 0 rows, no hint."""
    import io

    from controlplane.storage import export_rows, make_engine
    from sim.sweep import load_spec, run_sweep

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = load_spec(data={"name": "s", "trace": {"format": "azure", "limit": 20}, "seeds": [0], "record": "summary",
                           "space": {"cluster.models.0.replicas": [1]}})
    run_sweep(spec, url, backend="serial")
    with pytest.raises(LookupError, match="recorded with `record: summary`"):
        export_rows(make_engine(url), 1, "requests", "csv", io.StringIO())


def _database_failure_of_each_read(url: str) -> list[str]:
    """What each read of stored runs raises for ``url``: a `StorageError` each, its message."""
    from controlplane.storage import StorageError, list_sweeps, make_engine

    engine = make_engine(url)
    said = []
    try:
        for read in (list_runs, list_sweeps, lambda e: get_run(e, 1), lambda e: iter_rows(e, 1, "requests")):
            with pytest.raises(StorageError) as info:
                read(engine)
            said.append(str(info.value))
    finally:
        engine.dispose()
    return said


def test_a_server_not_answering_is_a_storage_error_naming_the_database_without_its_password():
    """list_runs/get_run/iter_rows raised SQLAlchemy's OperationalError (statement, "Background on this error"
    link) where a replay raised a StorageError and the CLI printed one line."""
    for message in _database_failure_of_each_read("postgresql+psycopg://me:secret@127.0.0.1:1/runs"):
        assert message.startswith("postgresql+psycopg://me:***@127.0.0.1:1/runs: OperationalError: ")
        assert "secret" not in message and "sqlalche.me" not in message and "\n" not in message


@pytest.mark.postgres
def test_a_database_not_there_is_a_storage_error_naming_it(pg_admin):
    from sqlalchemy.engine import make_url

    url = make_url(pg_admin.url).set(database="cp_no_such_database").render_as_string(hide_password=False)
    for message in _database_failure_of_each_read(url):
        assert "cp_no_such_database" in message and 'database "cp_no_such_database" does not exist' in message


def test_a_file_that_is_not_a_database_is_a_storage_error_naming_it(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database, " * 100)
    for message in _database_failure_of_each_read(f"sqlite:///{path}"):
        assert message.startswith(f"sqlite:///{path}: DatabaseError: file is not a database")


def test_a_status_that_is_not_one_is_a_value_error_naming_the_statuses(engine: Engine) -> None:
    """`list_runs(engine, status='finshed')` returned [] as if no run had finished."""
    from controlplane.storage import list_sweeps

    for listing in (list_runs, list_sweeps):
        with pytest.raises(ValueError, match=r"unknown status 'finshed' \(did you mean 'finished'.*\); statuses: "
                                             r"crashed, failed, finished, interrupted, running$"):
            listing(engine, status="finshed")


def test_a_sweeps_runs_are_listed_by_its_id(engine: Engine) -> None:
    """docs/schema.md said `list_sweeps(engine)`, `SweepResult.runs()`: from a new session, with a sweep's id
    and no `SweepResult`, nothing listed its runs."""
    from datetime import datetime, timezone

    from sqlalchemy import insert, update

    from controlplane.storage.models import Run, Sweep

    with RunRecorder(engine) as rec:
        ids = [start_run(rec, name=f"run{i}") for i in range(4)]
    with engine.begin() as conn:
        sweeps = [conn.execute(insert(Sweep.__table__).values(name=f"s{i}", kind="grid", status="finished", spec={},
                                                               spec_hash=str(i), created_at=datetime.now(timezone.utc))
                               ).inserted_primary_key[0] for i in range(2)]
        for run_id, sweep_id in ((ids[0], sweeps[0]), (ids[1], sweeps[1]), (ids[2], sweeps[0])):
            conn.execute(update(Run.__table__).where(Run.__table__.c.id == run_id).values(sweep_id=sweep_id))
    assert [r["id"] for r in list_runs(engine, sweep_id=sweeps[0])] == [ids[2], ids[0]]
    assert [r["id"] for r in list_runs(engine, 1, sweep_id=sweeps[0])] == [ids[2]]
    assert [(r["id"], r["sweep_id"]) for r in list_runs(engine, None, sweep_id=sweeps[1])] == [(ids[1], sweeps[1])]
    assert list_runs(engine, sweep_id=sweeps[1], status="finished") == []
    where = engine.url.render_as_string(hide_password=True)
    with pytest.raises(LookupError, match="^" + re.escape(f"sweep 99 not found in {where}")):
        list_runs(engine, sweep_id=99)
    assert len(list_runs(engine, None)) == 4
