"""The SQL recorder observer: a replay's requests, decisions, metrics and worker events in SQLite
and PostgreSQL, read back through the export."""

from __future__ import annotations

import io
import json
import secrets

import pytest

from controlplane.storage import decision_counts, export_rows, get_run, iter_rows, make_engine
from controlplane.testing import make_config, make_trace, replay_with
from sim.replay import replay
from tests.fixtures.common import azure_head

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _export(engine, run_id: int, what: str) -> list[dict]:
    buf = io.StringIO()
    n = export_rows(engine, run_id, what, "json", buf)
    rows = json.loads(buf.getvalue())
    assert len(rows) == n
    return rows


def _check_request_rows(rows: list[dict], expected_ids: set[str]) -> None:
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a request was stored twice"
    assert set(ids) == expected_ids
    for r in rows:
        if r["status"] != "completed":
            continue
        assert r["arrival_s"] <= r["scheduled_s"] <= r["first_token_s"] <= r["finish_s"], r
        assert r["ttft_s"] == pytest.approx(r["first_token_s"] - r["arrival_s"])
        assert r["e2e_s"] == pytest.approx(r["finish_s"] - r["arrival_s"])


def _check_run(engine, summary: dict, trace) -> None:
    run_id = summary["run_id"]
    run = get_run(engine, run_id)
    assert run["status"] == "finished" and run["mode"] == "sim"
    assert run["summary"]["num_completed"] == summary["num_completed"]
    assert [p["name"] for p in run["plugins"]][:2] == ["queue-limit", "exact-cache"]
    assert all(p["version"] == "0.1.0" for p in run["plugins"] if p["dist"] == "controlplane")
    _check_request_rows(_export(engine, run_id, "requests"), {t.request_id for t in trace})
    decisions = _export(engine, run_id, "decisions")
    routes = [d for d in decisions if d["action"] == "route"]
    assert len(routes) == summary["num_requests"] and all(d["reason"] for d in routes)
    assert not any(d["is_error"] for d in decisions)
    metrics = _export(engine, run_id, "metrics")
    assert {m["name"] for m in metrics} >= {"replicas", "queue_length", "kv_utilization"}
    kinds = [e["kind"] for e in _export(engine, run_id, "worker_events")]
    assert kinds.count("ready") == 2
    counts = {(c["hook"], c["action"]): c["count"] for c in decision_counts(engine, run_id)}
    assert counts[("cp_route_request", "route")] == summary["num_requests"]


def test_a_replay_is_recorded_in_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = make_trace(120, qps=6)
    res = replay_with(trace=trace, db_url=url, name="sqlite-check", seed=4)
    assert res.summary["run_id"] == 1
    engine = make_engine(url)
    _check_run(engine, res.summary, trace)
    run = get_run(engine, 1)
    assert (run["name"], run["seed"]) == ("sqlite-check", 4)
    # The stored config is the run's, so the run can be repeated from the database alone.
    assert run["config"]["seed"] == 4 and run["config"]["storage"]["url"] == url


def test_record_batches_false_keeps_batch_decisions_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(trace=make_trace(30), db_url=url, storage={"url": url, "record_batches": False})
    actions = {row["action"] for row in iter_rows(make_engine(url), res.summary["run_id"], "decisions")}
    assert "batch" not in actions and "route" in actions


def test_a_failed_replay_is_marked_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = make_trace(10)
    trace[5], trace[6] = trace[6], trace[5]  # out of arrival order
    with pytest.raises(ValueError, match="not in arrival order"):
        replay(trace, make_config(storage={"url": url}))
    run = get_run(make_engine(url), 1)
    assert run["status"] == "failed"
    assert "not in arrival order" in run["summary"]["error"]


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def pg_url():
    """A fresh database on the local server, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    from sqlalchemy.exc import OperationalError

    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"cp_t_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {str(exc).splitlines()[0]}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_a_replay_of_500_azure_rows_is_recorded_in_postgresql(pg_url):
    trace = azure_head(500)
    summary, session = replay(trace, make_config(storage={"url": pg_url}), trace_name="azure_code",
                              trace_format="azure")
    session.engine.dispose()
    assert summary["num_requests"] == 500
    engine = make_engine(pg_url)
    try:
        _check_run(engine, summary, trace)
        run = get_run(engine, summary["run_id"])
        assert (run["trace"], run["trace_format"]) == ("azure_code", "azure")
        rows = list(iter_rows(engine, summary["run_id"], "requests"))
        assert [r["request_id"] for r in rows] == [t.request_id for t in trace]  # arrival order
    finally:
        engine.dispose()
