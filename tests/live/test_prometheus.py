"""The Prometheus exporter's counts (`controlplane.live.prometheus`)."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.live.prometheus import PrometheusExporter
from controlplane.plugin_manager import MAX_RECORDED_ERRORS
from controlplane.testing import make_trace, replay_with


class Raising(Plugin):
    name = "raising"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        raise RuntimeError("no route")


def test_plugin_errors_total_counts_every_caught_exception_past_the_recorded_ones():
    exporter = PrometheusExporter()
    n = MAX_RECORDED_ERRORS + 50
    res = replay_with(Raising(), exporter, trace=make_trace(n, qps=50))
    recorded = [d for d in res.decisions if d.is_error]
    assert len(recorded) == MAX_RECORDED_ERRORS  # the decisions stop at the cap
    counted = exporter.registry.get_sample_value("controlplane_plugin_errors_total",
                                                 {"plugin": "raising", "hook": "cp_route_request"})
    assert counted == res.summary["plugin_error_counts"]["raising"]["cp_route_request"] == n


def test_requests_total_tells_a_timeout_from_a_client_gone_by_reason_code():
    """Both are ``cancelled``: only their reason code tells them apart."""
    from controlplane.events import RequestFinished
    from controlplane.types import ReasonCode, RequestStatus

    from controlplane.types import Request

    exporter = PrometheusExporter()
    for i, code in enumerate((ReasonCode.TIMEOUT, ReasonCode.CLIENT_GONE, ReasonCode.CLIENT_GONE, None)):
        request = Request(f"r{i}", 0.0, 4, 4, model="tiny", status=RequestStatus.CANCELLED, reason_code=code)
        exporter.cp_on_event(RequestFinished(1.0, request))

    def count(code: str) -> float | None:
        return exporter.registry.get_sample_value("controlplane_requests_total",
                                                  {"model": "tiny", "status": "cancelled", "reason_code": code})

    assert (count("timeout"), count("client_gone"), count("")) == (1.0, 2.0, 1.0)


def test_an_unplaced_start_is_counted_as_unplaced_not_failed():
    """Each start a full pool refused was counted as worker_events_total{kind="failed"}: read as crashes."""
    from controlplane.events import WorkerChanged

    exporter = PrometheusExporter()
    exporter.cp_on_event(WorkerChanged(1.0, "m-2", "failed", {"reason": "unplaceable: no free slot", "unplaced": True}))
    exporter.cp_on_event(WorkerChanged(2.0, "m-3", "failed", {"reason": "OSError"}))
    get = exporter.registry.get_sample_value
    assert get("controlplane_worker_events_total", {"kind": "unplaced"}) == 1.0
    assert get("controlplane_worker_events_total", {"kind": "failed"}) == 1.0


def test_the_response_caches_false_hit_rate_is_a_gauge_read_at_each_scrape():
    # /metrics had cache_hits_total only: a semantic cache's verified wrong answers were nowhere live
    from controlplane.testing import make_context, make_plugin_set
    from controlplane.types import Request

    plugins = make_plugin_set(enabled=["trace-hit-model"],
                              **{"trace-hit-model": {"mode": "rate", "hit_rate": 1.0, "false_hit_rate": 0.5}})
    exporter = PrometheusExporter()
    exporter.watch_caches(lambda: plugins.loaded)
    get = exporter.registry.get_sample_value
    assert get("controlplane_cache_checked_hits_total") == 0.0
    assert get("controlplane_cache_false_hit_rate") != get("controlplane_cache_false_hit_rate")  # NaN: none checked
    model, ctx = plugins.get("trace-hit-model"), make_context(seed=1)
    for i in range(40):
        model.cp_cache_lookup(ctx=ctx, request=Request(f"r{i}", 0.0, 10, 4))
    assert get("controlplane_cache_checked_hits_total") == model.hits == 40
    assert get("controlplane_cache_false_hits_total") == model.false_hits > 0
    assert get("controlplane_cache_false_hit_rate") == model.false_hits / 40


def test_a_cache_store_outage_shows_in_the_metrics():
    """A Redis cache outage showed nowhere but one log line: the stores down now and the calls that failed."""
    import types

    from plugins.cache_backends import RedisStore

    store = RedisStore("redis://127.0.0.1:1/0")  # port 1: nothing listens there
    exporter = PrometheusExporter()
    exporter.watch_caches(lambda: [types.SimpleNamespace(instance=types.SimpleNamespace(store=store))])
    assert b"controlplane_cache_stores_down 0.0" in exporter.render()
    store.get("k", now_s=0.0)
    text = exporter.render()
    assert b"controlplane_cache_stores_down 1.0" in text and b"controlplane_cache_store_failures_total 1.0" in text
    store.close()


def test_a_request_for_the_empty_model_name_is_counted_under_unknown():
    """``"model": ""`` (404 unknown_model) was counted under model="": an empty name is no served model's."""
    from types import SimpleNamespace

    from controlplane.events import RequestArrived, RequestFinished
    from controlplane.live.prometheus import UNKNOWN_MODEL_LABEL
    from controlplane.testing import make_config
    from controlplane.types import ReasonCode, Request, RequestStatus

    exporter = PrometheusExporter()
    exporter.cp_run_started(SimpleNamespace(config=make_config(cluster={"models": [{"name": "tiny"}]})))
    for model in ("", "gpt-9", "tiny"):
        request = Request(f"r-{model}", 1.0, 4, 4, model=model, status=RequestStatus.REJECTED,
                          reason_code=ReasonCode.UNKNOWN_MODEL)
        exporter.cp_on_event(RequestArrived(1.0, request))
        exporter.cp_on_event(RequestFinished(1.0, request))

    def count(metric: str, model: str, **labels: str) -> float | None:
        return exporter.registry.get_sample_value(f"controlplane_{metric}", {"model": model, **labels})

    rejected = {"status": "rejected", "reason_code": "unknown_model"}
    assert count("requests_total", UNKNOWN_MODEL_LABEL, **rejected) == 2.0
    assert count("requests_arrived_total", UNKNOWN_MODEL_LABEL) == 2.0
    assert count("requests_total", "", **rejected) is None and count("requests_arrived_total", "") is None
    assert count("requests_total", "tiny", **rejected) == 1.0


def test_tokens_and_first_token_latencies_count_every_request_as_it_goes_and_add_up_to_the_rows(tmp_path):
    """tokens_total and the TTFT / queue histograms counted completed requests only, at their end: a timed-out
    or cancelled request's tokens were nowhere, and tokens_total stood still while a long answer was generated."""
    import asyncio
    import contextlib
    import time

    from controlplane.live.driver import LiveDriver
    from controlplane.testing import stored_rows
    from tests.live.test_driver import config, run

    cfg = config(tmp_path, model={"worker": {"preset": "tiny-llama", "max_seq_len": 2048}})
    long = {"max_tokens": 2000, "ignore_eos": True}  # (seconds on a CPU: past the timeout of 2 s)

    def get(d: LiveDriver, name: str, **labels: str) -> float:
        d.metrics.render()  # (a scrape: the requests in flight looked at)
        return d.metrics.registry.get_sample_value(f"controlplane_{name}", {"model": "tiny", **labels}) or 0.0

    async def body(d: LiveDriver):
        done = [await d.generate(f"short {i}", max_tokens=4, ignore_eos=True) for i in range(3)]
        left = await d.submit("the client leaves", **long)
        deadline = time.monotonic() + 1.6  # (it times out after 2 s)
        while get(d, "tokens_total", kind="generated") <= 12:  # it generates: counted before its end
            assert time.monotonic() < deadline, "tokens_total stood still while an answer was generated"
            await asyncio.sleep(0.01)
        assert get(d, "request_ttft_seconds_count") == get(d, "request_queue_seconds_count") == 4
        assert get(d, "request_e2e_seconds_count") == 3
        d.cancel(left.request_id)
        timed_out = await d.submit("nobody waits this long", **long)
        with contextlib.suppress(Exception):
            await d.generate("x", model="no-such-model")
        results = done, await left.result(), await timed_out.result()
        assert await d.drain(30)  # (the timed-out one off its worker: recorded as cancelled, not cut off in flight)
        return results

    (done, left, timed_out), _, d = run(cfg, body, request_timeout_s=2.0)
    assert all(r.status == "completed" for r in done) and left.status == "cancelled"
    assert timed_out.status == "timeout"
    rows = stored_rows(cfg.storage.url, d.run_id, "requests")
    assert sorted((r["status"], r["reason_code"]) for r in rows if r["status"] != "completed") == [
        ("cancelled", "client_gone"), ("cancelled", "timeout"), ("rejected", "unknown_model")]
    assert all(r["output_tokens"] > 0 for r in rows if r["status"] == "cancelled")
    started = [r for r in rows if r["first_token_s"] is not None]
    assert get(d, "tokens_total", kind="generated") == sum(r["output_tokens"] for r in rows)
    assert get(d, "tokens_total", kind="prompt") == sum(r["prompt_tokens"] for r in started)
    assert get(d, "request_ttft_seconds_count") == len(started) == 5
    assert abs(get(d, "request_ttft_seconds_sum") - sum(r["first_token_s"] - r["arrival_s"] for r in started)) < 1e-6
    assert get(d, "request_queue_seconds_count") == sum(r["scheduled_s"] is not None for r in rows) == 5
    assert get(d, "request_e2e_seconds_count") == sum(r["status"] == "completed" for r in rows) == 3


REDIS_CONFIG = """\
cluster:
  models:
    - {name: tiny, replicas: 1, worker: {preset: tiny-llama}}
plugins:
  enabled: [exact-cache, least-loaded, continuous-batching, fixed-replicas]
  settings:
    exact-cache: {backend: redis, redis_url: "redis://127.0.0.1:PORT/0"RETRY}
"""


def test_the_cache_totals_are_counters_that_a_reload_does_not_reset(tmp_path):
    """cache_store_failures (documented "it only grows") fell to 0 on /admin/reload, and cache_stores_down
    read 0 while Redis was still down: both were read from the plugins loaded now, the replaced ones forgotten."""
    import re
    import time

    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config
    from tests.live.daemon_process import free_port, wait_until_ready

    path, port = tmp_path / "daemon.yaml", free_port()  # (nothing listens there)
    path.write_text(REDIS_CONFIG.replace("PORT", str(port)).replace("RETRY", ""))
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token="tok", cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)

    def metric(client, name: str) -> float:
        found = re.search(rf"^controlplane_{name} (\S+)$", client.get("/metrics").text, re.M)
        assert found, name
        return float(found.group(1))

    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        hello = {"prompt": "hello", "max_tokens": 2, "temperature": 0}  # (cached: exact-cache calls Redis)
        for i in range(2):
            assert client.post("/v1/completions", json=hello).status_code == 200
            time.sleep(1.1 * (1 - i))  # (a store that failed waits 1 s of run time before its next try)
        failed = metric(client, "cache_store_failures_total")
        assert failed >= 2 and metric(client, "cache_stores_down") == 1
        path.write_text(REDIS_CONFIG.replace("PORT", str(port)).replace("RETRY", ", retry_after_s: 2.0"))
        r = client.post("/admin/reload", headers={"authorization": "Bearer tok"})
        assert r.status_code == 200 and r.json()["restarted"] == ["exact-cache"], r.json()
        assert metric(client, "cache_store_failures_total") == failed  # was 0
        assert metric(client, "cache_stores_down") == 1  # its new store is untried; Redis was down: was 0
        assert client.post("/v1/completions", json=hello).status_code == 200
        assert metric(client, "cache_store_failures_total") > failed and metric(client, "cache_stores_down") == 1
        text = client.get("/metrics").text
    for name in ("cache_store_failures", "cache_checked_hits", "cache_false_hits", "storage_rows_refused"):
        assert f"# TYPE controlplane_{name}_total counter" in text and f"controlplane_{name}_total " in text, name


def test_a_worker_s_batch_size_series_goes_when_it_stops_or_fails():
    """batch_size{worker} kept a series for every worker ever started (ids are never reused): an autoscaled
    daemon's /metrics grew for good."""
    from controlplane.events import WorkerChanged
    from controlplane.types import Decision

    exporter = PrometheusExporter()
    for wid in ("m-0", "m-1", "m-2"):
        exporter.cp_on_event(Decision(1.0, "cp_form_batch", "core", "batch", wid, None, {"prefill": 1, "decode": 2}))
    exporter.cp_on_event(WorkerChanged(2.0, "m-1", "stopped"))
    exporter.cp_on_event(WorkerChanged(2.0, "m-2", "failed", {"reason": "killed"}))
    exporter.cp_on_event(WorkerChanged(2.0, "m-3", "failed", {"reason": "unplaceable", "unplaced": True}))  # none
    text = exporter.render().decode()
    assert 'controlplane_batch_size_count{worker="m-0"} 1.0' in text
    assert 'worker="m-1"' not in text and 'worker="m-2"' not in text


def test_the_latency_buckets_reach_past_the_default_request_timeout():
    """The E2E and queue histograms topped out at 300 s, below the default --request-timeout of 600 s: every
    answer between 300 and 600 s fell in +Inf alone."""
    from controlplane.events import RequestArrived, RequestFinished
    from controlplane.live.daemon import DaemonOptions
    from controlplane.types import Request, RequestStatus

    exporter = PrometheusExporter()
    r = Request("slow", 0.0, 4, 2, model="tiny")
    exporter.cp_on_event(RequestArrived(0.0, r))
    r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens = 450.0, 500.0, 550.0, 2
    r.status = RequestStatus.COMPLETED
    exporter.cp_on_event(RequestFinished(550.0, r))
    timeout = DaemonOptions().request_timeout_s
    for name in ("request_e2e_seconds", "request_queue_seconds", "request_ttft_seconds"):
        get = exporter.registry.get_sample_value
        assert get(f"controlplane_{name}_bucket", {"model": "tiny", "le": f"{float(timeout)}"}) == 1.0, name
        assert get(f"controlplane_{name}_bucket", {"model": "tiny", "le": "300.0"}) == 0.0, name


def test_no_created_samples_are_exported():
    """Every counter and histogram series came with a *_created gauge (57 of 288 samples of a daemon's /metrics)."""
    from controlplane.types import Decision

    exporter = PrometheusExporter()
    exporter.cp_on_event(Decision(1.0, "cp_form_batch", "core", "batch", "m-0", None, {"prefill": 1, "decode": 2}))
    exporter.http_response("/v1/completions", 200)
    text = exporter.render().decode()
    assert 'controlplane_http_requests_total{code="200",route="/v1/completions"} 1.0' in text
    assert "controlplane_batch_size_count" in text and "_created" not in text


def test_the_metrics_table_of_docs_daemon_md_and_the_exported_families_agree():
    """guardian_verdicts_total and the cache hit counts were exported but not in the table."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "daemon.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in section.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([a-z0-9_]+)`", row.split(" | ")[0])}
    exporter = PrometheusExporter()
    replay_with(exporter, trace=make_trace(20, qps=10))  # (the sampled gauges come with the core's samples)
    exported = {f"{f.name}_total" if f.type == "counter" else f.name for f in exporter.registry.collect()}
    assert {n.removeprefix("controlplane_") for n in exported} == documented


def test_worker_info_says_how_each_ready_worker_serves_its_model():
    """Neither /metrics nor `runs show` said which precision or compile mode a live run served (vLLM exports its
    config as *_info gauges)."""
    from controlplane.events import WorkerChanged

    exporter = PrometheusExporter()
    facts = {"device": "cpu", "model": "small-llama", "precision": "int8", "compiled": False, "compile_mode": None,
             "free_bytes": 1}
    exporter.cp_on_event(WorkerChanged(0.0, "small-0", "starting", {"model": "small", "reason": "initial replicas"}))
    exporter.cp_on_event(WorkerChanged(1.0, "small-0", "ready", facts))
    exporter.cp_on_event(WorkerChanged(1.0, "small-1", "ready", {**facts, "precision": "bf16", "compiled": True,
                                                                  "compile_mode": "reduce-overhead"}))
    exporter.cp_on_event(WorkerChanged(1.0, "sim-0", "ready", None))  # (a simulated worker: no facts, no series)
    text = exporter.render().decode()
    assert ('controlplane_worker_info{compile_mode="",compiled="false",device="cpu",model="small",precision="int8",'
            'source="small-llama",worker="small-0"} 1.0') in text
    assert ('controlplane_worker_info{compile_mode="reduce-overhead",compiled="true",device="cpu",model="",'
            'precision="bf16",source="small-llama",worker="small-1"} 1.0') in text
    assert 'worker="sim-0"' not in text
    exporter.cp_on_event(WorkerChanged(2.0, "small-0", "stopped"))
    exporter.cp_on_event(WorkerChanged(2.0, "small-1", "failed", {"reason": "killed"}))
    assert "controlplane_worker_info{" not in exporter.render().decode()
