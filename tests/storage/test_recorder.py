"""RunRecorder round trips, validation and batching on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import time
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from controlplane.storage import RunRecorder, StorageError, get_run, iter_request_rows, iter_rows
from controlplane.storage.models import Decision, MetricSample, Request, WorkerEvent

from .support import FINISHED, STARTED, decision_row, metric_row, request_row, start_run, worker_event_row


def _count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_round_trip(engine: Engine) -> None:
    with RunRecorder(engine, batch_size=7) as rec:
        run_id = start_run(rec)
        assert get_run(engine, run_id)["status"] == "running"
        for i in range(20):
            rec.add_request(request_row(i))
            rec.add_decision(decision_row(i))
            rec.add_metric(metric_row(i))
        rec.add_request(request_row(99, status="in_flight", first_token_s=None, finish_s=None, output_tokens=3))
        rec.add_request(request_row(98, status="rejected", reason="tenant over quota", scheduled_s=None,
                                    first_token_s=None, finish_s=None, output_tokens=0))
        rec.add_decision(decision_row(0, is_error=True, payload=None, action=None, reason="plugin raised KeyError"))
        rec.add_worker_event(worker_event_row(0, kind="starting", detail=None))
        rec.add_worker_event(worker_event_row(1))
        assert rec.finish_run(run_id, status="finished", summary={"p50_ttft_s": 0.5, "empty_p99": float("nan")},
                              finished_at=FINISHED, wall_s=12.5, sim_end_s=330.0)
    assert rec.pending == 0 and rec.errors == []

    run = get_run(engine, run_id)
    assert run["status"] == "finished"
    assert run["config"] == {"cluster": {"workers": 2}, "router": "least_loaded"}
    assert run["plugins"][0]["name"] == "defaults"
    assert run["started_at"] == STARTED and run["finished_at"] == FINISHED
    assert run["summary"] == {"p50_ttft_s": 0.5, "empty_p99": None}
    assert (run["wall_s"], run["sim_end_s"], run["seed"], run["trace_format"]) == (12.5, 330.0, 7, "jsonl")

    requests = {r["request_id"]: r for r in iter_request_rows(engine, run_id)}
    assert len(requests) == 22
    r = requests["req-000004"]
    assert (r["arrival_s"], r["first_token_s"], r["finish_s"]) == (2.0, 2.5, 4.5)
    assert r["ttft_s"] == pytest.approx(0.5)
    assert r["e2e_s"] == pytest.approx(2.5)
    assert r["queue_s"] == pytest.approx(0.25)
    assert r["tpot_s"] == pytest.approx(2.0 / 40)
    assert (r["cached_tokens"], r["num_preemptions"], r["cache_hit"]) == (0, 0, None)
    assert requests["req-000099"]["status"] == "in_flight"
    assert requests["req-000099"]["ttft_s"] is None
    assert requests["req-000098"]["reason"] == "tenant over quota"

    decisions = list(iter_rows(engine, run_id, "decisions"))
    assert len(decisions) == 21
    assert [d["time_s"] for d in decisions] == sorted(d["time_s"] for d in decisions)
    by_subject = {d["subject"]: d for d in decisions if not d["is_error"]}
    assert by_subject["req-000001"]["payload"] == {"worker": "w1", "load": [1, 2]}
    errors = [d for d in decisions if d["is_error"]]
    assert len(errors) == 1 and errors[0]["payload"] is None
    assert sum(1 for d in decisions if d["is_error"] is False) == 20

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).where(Decision.__table__.c.payload.is_(None))).scalar_one() == 1
        assert conn.execute(select(func.count()).where(WorkerEvent.__table__.c.detail.is_(None))).scalar_one() == 1
    metrics = list(iter_rows(engine, run_id, "metrics"))
    assert [m["value"] for m in metrics[:6]] == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0]
    assert metrics[0]["labels"] == {"worker": "w0"}
    assert [e["kind"] for e in iter_rows(engine, run_id, "worker_events")] == ["starting", "ready"]


def test_given_latencies_are_kept(sqlite_engine: Engine) -> None:
    with RunRecorder(sqlite_engine) as rec:
        run_id = start_run(rec)
        rec.add_request(request_row(1, ttft_s=9.0, tpot_s=8.0, e2e_s=7.0, queue_s=6.0))
    row = next(iter_request_rows(sqlite_engine, run_id))
    assert (row["ttft_s"], row["tpot_s"], row["e2e_s"], row["queue_s"]) == (9.0, 8.0, 7.0, 6.0)


def test_two_runs_are_kept_apart(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        first = start_run(rec, name="a")
        rec.add_request(request_row(1))
        second = start_run(rec, name="b")
        rec.add_request(request_row(1))
        rec.add_request(request_row(2))
    assert len(list(iter_request_rows(engine, first))) == 1
    assert len(list(iter_request_rows(engine, second))) == 2


def test_numpy_and_int_values_are_coerced(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        rec.add_request(request_row(1, request_id=12345, prompt_tokens=np.int64(7), output_tokens=np.int32(3),
                                    arrival_s=np.float32(1.5), finish_s=np.float64(4.0), first_token_s=2))
        rec.add_decision(decision_row(1, is_error=np.bool_(False), payload={"score": np.float64(0.25),
                                                                           "ids": np.arange(3)}))
        rec.add_metric(metric_row(1, value=np.int64(3)))
    row = next(iter_request_rows(engine, run_id))
    assert row["request_id"] == "12345"
    assert (row["prompt_tokens"], row["output_tokens"]) == (7, 3)
    assert row["arrival_s"] == 1.5 and row["ttft_s"] == 0.5 and row["tpot_s"] == 1.0
    decision = next(iter_rows(engine, run_id, "decisions"))
    assert decision["payload"] == {"score": 0.25, "ids": [0, 1, 2]}
    assert next(iter_rows(engine, run_id, "metrics"))["value"] == 3.0


def test_payload_is_snapshotted_at_append(sqlite_engine: Engine) -> None:
    payload = {"worker": "w0"}
    with RunRecorder(sqlite_engine) as rec:
        run_id = start_run(rec)
        rec.add_decision(decision_row(1, payload=payload))
        payload["worker"] = "mutated"
    assert next(iter_rows(sqlite_engine, run_id, "decisions"))["payload"] == {"worker": "w0"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (request_row(1, colour="red"), r"unknown column\(s\) \['colour'\]"),
        ({"request_id": "x", "status": "completed"}, r"missing required column\(s\) \['arrival_s', 'output_tokens'"),
        (request_row(1, status="done"), r"request.status = 'done' is not one of \['blocked', 'cancelled', 'completed', 'failed', 'in_flight'"),
        (request_row(1, cache_hit="maybe"), r"cache_hit = 'maybe' is not one of"),
        (request_row(1, prompt_tokens=1.5), r"request.prompt_tokens = 1.5 must be an integer"),
        (request_row(1, arrival_s="soon"), r"request.arrival_s = 'soon' must be a real number"),
        (request_row(1, model=["m"]), r"request.model = \['m'\] must be a string"),
    ],
)
def test_invalid_request_rows_are_refused_at_append(sqlite_engine: Engine, row: dict, message: str) -> None:
    rec = RunRecorder(sqlite_engine)
    start_run(rec)
    with pytest.raises(ValueError, match=message):
        rec.add_request(row)
    assert rec.pending == 0
    rec.close()


def test_invalid_other_rows_are_refused(sqlite_engine: Engine) -> None:
    rec = RunRecorder(sqlite_engine)
    start_run(rec)
    with pytest.raises(ValueError, match="worker_event.kind = 'exploded'"):
        rec.add_worker_event(worker_event_row(1, kind="exploded"))
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        rec.add_decision(decision_row(1, payload={"obj": object()}))
    with pytest.raises(ValueError, match="decision.is_error = 'yes' must be a bool"):
        rec.add_decision(decision_row(1, is_error="yes"))
    with pytest.raises(ValueError, match="run mode 'batch'"):
        start_run(rec, mode="batch")
    with pytest.raises(ValueError, match="run status 'done'"):
        rec.finish_run(1, status="done", summary={}, finished_at=FINISHED, wall_s=None, sim_end_s=None)
    with pytest.raises(ValueError, match="naive"):
        rec.finish_run(1, status="finished", summary={}, finished_at=datetime(2025, 1, 1), wall_s=None,
                       sim_end_s=None)
    rec.close()


def test_append_before_start_run_is_refused(sqlite_engine: Engine) -> None:
    rec = RunRecorder(sqlite_engine)
    with pytest.raises(StorageError, match="call start_run"):
        rec.add_request(request_row(1))


def test_closed_recorder_refuses_rows(sqlite_engine: Engine) -> None:
    rec = RunRecorder(sqlite_engine)
    start_run(rec)
    rec.close()
    rec.close()
    with pytest.raises(StorageError, match="closed"):
        rec.add_request(request_row(1))


def test_flushes_when_a_buffer_reaches_batch_size(sqlite_engine: Engine) -> None:
    rec = RunRecorder(sqlite_engine, batch_size=10)
    start_run(rec)
    for i in range(9):
        rec.add_request(request_row(i))
    assert _count(sqlite_engine, Request.__table__) == 0
    rec.add_metric(metric_row(0))
    rec.add_request(request_row(9))
    assert _count(sqlite_engine, Request.__table__) == 10
    assert _count(sqlite_engine, MetricSample.__table__) == 1, "one flush writes every buffer"
    assert rec.pending == 0 and rec.written["request"] == 10
    rec.close()


def test_flush_interval(sqlite_engine: Engine) -> None:
    now = [0.0]
    rec = RunRecorder(sqlite_engine, batch_size=1000, flush_interval_s=5.0, clock=lambda: now[0])
    start_run(rec)
    rec.add_metric(metric_row(0))
    assert rec.pending == 1
    now[0] = 5.0
    rec.add_metric(metric_row(1))
    assert rec.pending == 0
    rec.close()


def test_bulk_insert_rate(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """Sanity check of the bulk path; prints the rate, asserts only that nothing was lost."""
    n = 50_000
    rows = [request_row(i) for i in range(n)]
    with RunRecorder(engine) as rec:
        run_id = start_run(rec)
        t0 = time.perf_counter()
        for row in rows:
            rec.add_request(row)
        rec.flush()
        elapsed = time.perf_counter() - t0
    assert rec.written["request"] == n
    with engine.connect() as conn:
        stored = conn.execute(
            select(func.count(), func.sum(Request.__table__.c.prompt_tokens)).where(
                Request.__table__.c.run_id == run_id
            )
        ).one()
    assert tuple(stored) == (n, sum(r["prompt_tokens"] for r in rows))
    with capsys.disabled():
        print(f"\n[{engine.dialect.name}] {n} request rows in {elapsed:.2f}s = {n / elapsed:,.0f} rows/s")


def test_nan_floats_in_rows(sqlite_engine: Engine) -> None:
    with RunRecorder(sqlite_engine) as rec:
        run_id = start_run(rec)
        rec.add_metric(metric_row(1, value=float("inf"), labels={"x": float("nan")}))
    metric = next(iter_rows(sqlite_engine, run_id, "metrics"))
    assert math.isinf(metric["value"]) and metric["labels"] == {"x": None}


def test_start_run_fails_clearly_without_schema(tmp_path) -> None:
    from controlplane.storage import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    rec = RunRecorder(engine, max_retries=1, sleep=lambda s: None)
    with pytest.raises(StorageError, match=r"could not start run in sqlite:///.*empty.db.*no such table: run"):
        start_run(rec)
    engine.dispose()


def _values(table: str, row: dict) -> tuple:
    from controlplane.storage.rows import SPECS

    return tuple(row.get(c) for c in SPECS[table].columns)


def test_add_values_stores_what_the_dict_path_stores(sqlite_engine: Engine) -> None:
    from controlplane.storage.rows import SPECS, derive_latencies

    with RunRecorder(sqlite_engine) as rec:
        run_id = start_run(rec)
        row = request_row(1)
        rec.add_request(row)
        derived = derive_latencies(SPECS["request"].build(row, run_id))
        rec.add_values("request", _values("request", dict(derived, request_id="req-b")))
        rec.add_values("decision", _values("decision", decision_row(2)))
        rec.add_values("metric_sample", (np.float64(3.0), "queue_length", np.int64(4), {"model": "m"}))
    a, b = sorted(iter_request_rows(sqlite_engine, run_id), key=lambda r: r["request_id"])
    assert {k: v for k, v in a.items() if k not in ("id", "request_id")} == \
        {k: v for k, v in b.items() if k not in ("id", "request_id")}
    (sample,) = list(iter_rows(sqlite_engine, run_id, "metrics"))
    assert (sample["time_s"], sample["value"], sample["labels"]) == (3.0, 4.0, {"model": "m"})


@pytest.mark.parametrize(
    ("table", "values", "message"),
    [
        ("request", ("r", "m", None, None, None, "done", None, None, 0.0, None, None, None, 1, 1) + (None,) * 9,
         "status = 'done' is not one of"),
        ("request", (None, "m", None, None, None, "completed", None, None, 0.0, None, None, None, 1, 1) + (None,) * 9,
         "missing required column 'request_id'"),
        ("metric_sample", (0.0, "x", "high", None), "metric_sample.value = 'high' must be a real number"),
        ("metric_sample", (0.0, "x", 1.0), "3 values for 4 columns"),
        ("decision", (0.0, "p", "h", None, "a", {"bad": object()}, None, False), "payload .* is not JSON"),
    ],
)
def test_add_values_refuses_invalid_rows(sqlite_engine: Engine, table: str, values: tuple, message: str) -> None:
    with RunRecorder(sqlite_engine) as rec:
        start_run(rec)
        with pytest.raises(ValueError, match=message):
            rec.add_values(table, values)
        assert rec.pending == 0
        with pytest.raises(ValueError, match=message):
            rec.appender(table)(values)  # the per-table adder checks the same
        assert rec.pending == 0


def test_a_tables_appender_buffers_what_add_values_does_and_flushes_at_the_batch_size(sqlite_engine: Engine) -> None:
    with RunRecorder(sqlite_engine, batch_size=3) as rec:
        add = rec.appender("metric_sample")
        with pytest.raises(StorageError, match="no run started"):
            add((0.0, "queue_length", 1.0, None))
        run_id = start_run(rec)
        add((1.0, "queue_length", np.int64(2), {"model": "m"}))
        rec.add_values("metric_sample", (1.0, "queue_length", np.int64(2), {"model": "m"}))
        a, b = rec._buffers["metric_sample"]
        assert a == b and rec.pending == 2
        add((2.0, "queue_length", 3.0, None))  # the third row: flushed
        assert rec.pending == 0 and rec.written["metric_sample"] == 3
    assert [r["time_s"] for r in iter_rows(sqlite_engine, run_id, "metrics")] == [1.0, 1.0, 2.0]


def test_the_daemons_metrics_show_the_recorders_backlog(sqlite_engine: Engine) -> None:
    from controlplane.live.prometheus import PrometheusExporter

    def gauge(text: str, name: str) -> float:
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    exporter = PrometheusExporter()
    with RunRecorder(sqlite_engine, batch_size=1000, flush_interval_s=3600) as rec:
        start_run(rec)
        exporter.watch_storage(rec)
        for i in range(5):
            rec.add_metric(metric_row(i))
        assert gauge(exporter.render().decode(), "controlplane_storage_rows_pending") == 5  # read at the scrape
        rec.flush()
        shown = exporter.render().decode()
    assert gauge(shown, "controlplane_storage_rows_pending") == 0 and gauge(shown, "controlplane_storage_spill_files") == 0
    assert gauge(shown, "controlplane_storage_rows_refused_total") == 0


def test_the_daemons_metrics_count_refused_rows(sqlite_engine: Engine, tmp_path) -> None:
    from controlplane.live.prometheus import PrometheusExporter

    exporter = PrometheusExporter()
    with RunRecorder(sqlite_engine, spill_dir=tmp_path) as rec:
        start_run(rec)
        exporter.watch_storage(rec)
        rec.add_request(request_row(1))
        rec.add_request(request_row(1))  # a repeated id: refused, the recorder goes on
        rec.flush()
        shown = exporter.render().decode()
    assert "controlplane_storage_rows_refused_total 1.0" in shown.splitlines()
