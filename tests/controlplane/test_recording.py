"""The SQL recorder observer: a replay's requests, decisions, metrics and worker events in SQLite
and PostgreSQL, read back through the export."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from controlplane.config import SLOConfig
from controlplane.events import IterationTimed, MetricSample
from controlplane.metrics import RunStats
from controlplane.recording import SqlRecorder, request_values
from controlplane.request_latency import request_latencies
from controlplane.storage import (
    RunRecorder,
    decision_counts,
    derive_latencies,
    ensure_schema,
    export_rows,
    get_run,
    iter_rows,
    iteration_rows,
    make_engine,
)
from controlplane.types import Decision, ReasonCode, Request, RequestStatus
from controlplane.testing import make_config, make_trace, replay_with
from sim.replay import replay
from tests.fixtures.common import azure_head
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures: $CONTROLPLANE_TEST_PG_URL's server)


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
    names = [p["name"] for p in run["plugins"]]  # in call order: those passed in code (the recorder first), then
    assert names[0] == "sql-recorder"  # the config's, the first enabled first
    assert names[names.index("queue-limit"):][:2] == ["queue-limit", "exact-cache"]
    assert all(p["dist"] is None for p in run["plugins"][:names.index("queue-limit")])
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


@pytest.mark.postgres
def test_a_replay_of_500_azure_rows_is_recorded_in_postgresql(pg_url):  # noqa: F811
    trace = azure_head(500)
    summary, session = replay(trace, make_config(storage={"url": pg_url}), trace_name="azure_code",
                              trace_format="azure")
    if session.engine is not None:  # (with a writer process the engine was the writer's)
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


# --- one definition of a request's latencies ----------------------------------------------------


def _hand_built() -> dict[str, Request]:
    """A plain request, a one-token output, a cache hit, a preempted one, a rejected one, one cancelled mid-stream
    and one whose answer a guardian blocked."""

    def done(rid, arrival, scheduled, first, finish, out, **fields) -> Request:
        r = Request(rid, arrival, 100, out, status=RequestStatus.COMPLETED, worker_id="w0", **fields)
        r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens = scheduled, first, finish, out
        return r

    preempted = done("preempted", 0.0, 0.5, 1.0, 5.0, 9)
    preempted.num_preemptions = 1
    cached = done("cache-hit", 2.0, 2.0, 2.01, 2.01, 20)
    cached.cache_hit = "exact"
    rejected = Request("rejected", 3.0, 100, 16, status=RequestStatus.REJECTED, reason="queue full: 8 waiting",
                       reason_code=ReasonCode.QUEUE_FULL)
    rejected.finish_s = 3.0
    cancelled = done("cancelled", 4.0, 4.5, 5.0, 6.0, 3, reason="client disconnected")
    cancelled.status = RequestStatus.CANCELLED
    blocked = done("blocked", 5.0, 5.1, 5.2, 7.0, 8, reason="guardian: unsafe")
    blocked.status = RequestStatus.BLOCKED
    return {r.request_id: r for r in (
        done("plain", 1.0, 1.5, 2.0, 4.0, 5), done("one-token", 0.0, 0.1, 0.3, 0.3, 1), cached, preempted, rejected,
        cancelled, blocked,
    )}


def test_summary_request_rows_and_derive_latencies_agree(tmp_path):
    requests = _hand_built()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name=None, mode="sim", trace=None, trace_format=None, seed=0, config={}, plugins=[],
                               started_at=datetime.now(timezone.utc))
        for r in requests.values():
            rec.add_values("request", request_values(r))
    stored = {row["request_id"]: row for row in iter_rows(engine, run_id, "requests")}
    names = ("ttft_s", "tpot_s", "e2e_s", "queue_s")
    for rid, r in requests.items():
        row = stored[rid]
        from_row = tuple(row[k] for k in names)
        # (only a completed request has latencies: the summary's; the others' rows none)
        assert from_row == (request_latencies(r) if r.status is RequestStatus.COMPLETED else (None,) * 4), rid
        derived = derive_latencies({"status": r.status.value, "arrival_s": r.arrival_s, "scheduled_s": r.scheduled_s,
                                    "first_token_s": r.first_token_s, "finish_s": r.finish_s,
                                    "output_tokens": r.output_tokens, **dict.fromkeys(names)})
        assert tuple(derived[k] for k in names) == from_row, rid
        stats = RunStats()  # the summary of a run of this one request
        stats.on_arrival(r)
        stats.on_finished(r, SLOConfig())
        summary = stats.summary(10.0)
        for k, value in zip(names, from_row):
            expected = value if r.status is RequestStatus.COMPLETED else None  # summaries count completions
            assert summary[f"{k[:-2]}_p50_s"] == (pytest.approx(expected) if expected is not None else None), (rid, k)
    assert stored["one-token"]["tpot_s"] is None
    assert stored["cache-hit"]["queue_s"] == 0.0 and stored["cache-hit"]["cache_hit"] == "exact"
    assert stored["preempted"]["num_preemptions"] == 1 and stored["preempted"]["queue_s"] == 0.5
    # A rejected request's E2E was its refusal's 0 s (SQL averages fell below the summary's): NULL now, as every
    # latency of a request that did not complete; how far it got stays in its timestamps.
    assert (stored["rejected"]["reason_code"], stored["rejected"]["e2e_s"], stored["rejected"]["queue_s"]) == \
        ("queue_full", None, None)
    for rid in ("cancelled", "blocked"):
        assert tuple(stored[rid][k] for k in names) == (None,) * 4, rid
        assert stored[rid]["first_token_s"] == requests[rid].first_token_s and stored[rid]["finish_s"] is not None
    assert stored["plain"]["reason_code"] is None
    engine.dispose()


def test_a_rejected_request_stores_its_reason_code(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(trace=make_trace(40, qps=50), db_url=url, plugins={"settings": {"queue-limit": {"max_queued": 1}}})
    rows = list(iter_rows(make_engine(url), res.summary["run_id"], "requests"))
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected and all(r["reason_code"] in {c.value for c in ReasonCode} for r in rejected)
    assert all(r["reason_code"] is None for r in rows if r["status"] == "completed")


# --- live iteration timings -----------------------------------------------------------------------


def _iteration(i: int, worker: str = "w0", padded: bool = True) -> IterationTimed:
    row = {"num_prefill_tokens": 128.0 if i % 2 == 0 else 0.0, "num_prefill_seqs": 1 if i % 2 == 0 else 0,
           "num_decode_seqs": 3, "sum_decode_context": 900, "sum_prefill_context": 0, "iteration_s": 0.01 + i / 1000}
    if padded:
        row |= {"padded_prefill_tokens": 256, "padded_decode_context": 1200}
    return IterationTimed(time_s=1.0 + i, worker_id=worker, batch_id=i, start_s=0.98 + i, row=row)


def test_iteration_columns_are_the_profile_fields():
    from controlplane.hardware.profile_format import PADDED_FIELDS, ROW_FIELDS
    from controlplane.recording import ITERATION_ROW_FIELDS

    assert set(ITERATION_ROW_FIELDS) == set(ROW_FIELDS) | set(PADDED_FIELDS)


@pytest.mark.parametrize("record_iterations", [True, False])
def test_iterations_are_recorded_when_asked(tmp_path, record_iterations):
    engine = make_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    ensure_schema(engine)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name=None, mode="live", trace=None, trace_format=None, seed=0, config={}, plugins=[],
                               started_at=datetime.now(timezone.utc))
        observer = SqlRecorder(rec, record_iterations=record_iterations)
        for i in range(4):
            observer.cp_on_event(event=_iteration(i, worker=f"w{i % 2}", padded=i != 3))
    rows = iteration_rows(engine, run_id)
    if not record_iterations:
        assert rows == []
        return
    assert [r["batch_id"] for r in rows] == [0, 1, 2, 3]  # oldest reply first
    assert rows[0] == {"worker_id": "w0", "batch_id": 0, "start_s": 0.98, "end_s": 1.0, "num_prefill_tokens": 128,
                       "num_prefill_seqs": 1, "num_decode_seqs": 3, "sum_decode_context": 900,
                       "sum_prefill_context": 0, "iteration_s": 0.01, "padded_prefill_tokens": 256,
                       "padded_decode_context": 1200}
    assert rows[3]["padded_prefill_tokens"] is None and rows[3]["padded_decode_context"] is None
    assert [r["batch_id"] for r in iteration_rows(engine, run_id, worker="w1")] == [1, 3]
    exported = _export(engine, run_id, "iterations")
    assert exported == rows
    assert not any(d["action"] == "iteration" for d in _export(engine, run_id, "decisions"))
    engine.dispose()


def test_live_sessions_write_in_the_background_and_simulations_inline(tmp_path, monkeypatch):
    from controlplane.session import RunSession
    from controlplane.storage.early import ENV_SWITCH, FrontRecorder, writer_process_possible

    monkeypatch.setenv(ENV_SWITCH, "1")  # a writer process wherever one can run, busy host or not
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for mode in ("live", "sim"):
        session = RunSession(make_config(storage={"url": url}), mode=mode)
        try:
            if mode == "live":
                assert session.recorder._thread is not None
            else:  # a writer process where one can run, else inline: no thread either way
                assert getattr(session.recorder, "_thread", None) is None
                assert isinstance(session.recorder, FrontRecorder) is writer_process_possible()
        finally:
            session.close({})


def test_decisions_and_samples_reach_a_collector_with_add_values_only_as_their_columns_values():
    got = []

    class Collector:  # the sweep's row collector has only add_values
        def add_values(self, table, values):
            got.append((table, values))

    recorder = SqlRecorder(Collector())
    recorder.cp_on_event(Decision(time_s=1.0, hook="h", plugin="p", action="a", payload={"k": 1}))
    recorder.cp_on_event(MetricSample(2.0, "n", 3.0, {"model": "x"}))
    assert got == [("decision", (1.0, "p", "h", None, "a", {"k": 1}, None, False)),
                   ("metric_sample", (2.0, "n", 3.0, {"model": "x"}))]
