"""The daemon for real: `python -m controlplane.cli.live` in a subprocess on a free port, two tiny
random-weight models in worker processes, spoken to with the `openai` client.

The subprocess tests run in file order on one daemon: API, batching, metrics, admin, killing
worker processes mid-request, and finally SIGTERM (drain, exit 0, run closed in SQL).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from controlplane.errors import ConfigError
from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import DaemonProcess, wait_until_ready

TOKEN = "test-admin-token"
MODEL = "tiny-llama"
NO_EOS = {"ignore_eos": True}


class TinyDaemon(DaemonProcess):
    """Two tiny-llama workers in processes, an admin token, a half-second control loop."""

    def __init__(self, tmp: Path) -> None:
        self.db_url = f"sqlite:///{tmp / 'daemon.db'}"
        config = tmp / "daemon.yaml"
        config.write_text("cluster:\n  max_retries: 1\ncontrol:\n  tick_s: 0.5\n  metrics_interval_s: 0.5\n")
        super().__init__(tmp, ["--config", str(config), "--pool", "process", "--workers", "2", "--db", self.db_url,
                               "--drain-timeout", "60"], env={"CONTROLPLANE_ADMIN_TOKEN": TOKEN})
        self.admin = {"authorization": f"Bearer {TOKEN}"}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key="x", max_retries=0, timeout=60)

    def workers(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base}/admin/workers", headers=self.admin, timeout=10).json()["workers"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = TinyDaemon(tmp_path_factory.mktemp("daemon"))
    yield d
    d.close()


# --- no subprocess needed (they run while the daemon boots) ---------------------------------------


def test_daemon_config_from_flags(tmp_path, daemon):
    cfg, _ = daemon_config(None, db="sqlite:///x.db", precision="fp32")
    (m,) = cfg.cluster.models
    assert m.name == MODEL and m.worker == {"preset": MODEL, "precision": "fp32"} and m.replicas >= 1
    assert m.max_model_len == 2048 and cfg.storage.url == "sqlite:///x.db"
    cfg, _ = daemon_config(None, preset="small-llama", workers=3, model_name="s")
    assert (cfg.cluster.models[0].name, cfg.cluster.models[0].replicas) == ("s", 3)
    with pytest.raises(ConfigError, match="not both"):
        daemon_config(None, preset=MODEL, model_path="/models/x")
    two = tmp_path / "two.yaml"
    two.write_text("cluster:\n  models:\n    - {name: a}\n    - {name: b}\n")
    with pytest.raises(ConfigError, match="one-model config"):
        daemon_config(two, workers=2)
    assert [m.name for m in daemon_config(two)[0].cluster.models] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown pool"):
        DaemonOptions(pool="kubernetes")


def test_in_process_daemon_has_no_admin_without_a_token(tmp_path, daemon):
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1)
    app_daemon = Daemon(cfg, DaemonOptions(pool="thread", admin_token=None, cpu_threads=1), record=False)
    with TestClient(app_daemon.app) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        for method, path in (("GET", "/admin/plugins"), ("POST", "/admin/reload"), ("POST", "/admin/drain")):
            r = http.request(method, path, headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 404 and "CONTROLPLANE_ADMIN_TOKEN" in r.json()["error"]["message"]
        wait_until_ready(http)
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        r = client.completions.create(model=MODEL, prompt="in process", max_tokens=3, extra_body=NO_EOS)
        assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
        assert not app_daemon.driver.draining


# --- the daemon subprocess ------------------------------------------------------------------------


def test_probes_and_models(daemon):
    daemon.wait_ready()
    assert httpx.get(f"{daemon.base}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{daemon.base}/readyz").json()
    assert ready["ready"] is True and ready["workers"].get("ready", 0) >= 1
    for probe in ("/healthz", "/readyz"):  # a load balancer's HEAD check (it was a 405)
        head = httpx.head(f"{daemon.base}{probe}")
        assert head.status_code == 200 and head.content == b"", (probe, head.status_code)
    models = daemon.client().models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_completions_chat_and_streaming(daemon):
    daemon.wait_ready()
    client = daemon.client()
    r = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=8, temperature=0, extra_body=NO_EOS)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == len("Hello there")
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0, extra_body=NO_EOS
    )
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 6

    stream = client.completions.create(model=MODEL, prompt="stream me", max_tokens=10, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, extra_body=NO_EOS)
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    again = client.completions.create(model=MODEL, prompt="stream me", max_tokens=10, temperature=0, extra_body=NO_EOS)
    assert again.choices[0].text == streamed  # greedy: the same text streamed or not

    chat_chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream a chat"}], max_tokens=5, temperature=0,
        stream=True, extra_body=NO_EOS,
    ))
    assert chat_chunks[0].choices[0].delta.role == "assistant"
    assert chat_chunks[-1].choices[0].finish_reason == "length"

    with httpx.stream("POST", f"{daemon.base}/v1/completions", json={
        "model": MODEL, "prompt": "raw sse", "max_tokens": 3, "stream": True, "ignore_eos": True,
    }) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_bad_requests_get_openai_errors(daemon):
    daemon.wait_ready()
    client = daemon.client()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="too long"):
        client.completions.create(model=MODEL, prompt="x" * 3000, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="logprobs is not supported"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, logprobs=2)
    r = httpx.post(f"{daemon.base}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": "lots"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_hostile_requests_over_http_are_400s_and_no_worker_fails(daemon):
    """Issue 18's reports, through uvicorn to worker processes: a non-finite sampling parameter,
    a lone surrogate, an unknown chat role, a non-text content part; then a 200."""
    daemon.wait_ready()
    url = f"{daemon.base}/v1"
    hostile = [
        ("completions", b'{"model": "%s", "prompt": "x", "max_tokens": 2, "temperature": NaN}' % MODEL.encode()),
        ("completions", b'{"model": "%s", "prompt": "x", "max_tokens": 2, "top_p": 1e999}' % MODEL.encode()),
        ("completions", b'{"model": "%s", "prompt": "\\ud800", "max_tokens": 2}' % MODEL.encode()),
        ("chat/completions", json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}).encode()),
        ("chat/completions", json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}]}).encode()),
        ("completions", b"{" * 3 + b"x"),
    ]
    for path, raw in hostile:
        r = httpx.post(f"{url}/{path}", content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, (path, raw, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = daemon.client().completions.create(model=MODEL, prompt="still fine", max_tokens=2)
    assert ok.choices[0].text is not None
    assert all(w["state"] == "ready" and w["alive"] for w in daemon.workers())


def test_concurrent_requests_are_batched(daemon):
    daemon.wait_ready()
    deadline = time.monotonic() + 120  # (/readyz answers once one replica is ready: the other may still load)
    while sum(w["state"] == "ready" for w in daemon.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    client = daemon.client()

    start = threading.Barrier(8)  # (sent together, and long enough to overlap: on a loaded machine threads started
    # one by one sent requests that finished before the next arrived, all on one replica)

    def one(i: int):
        start.wait(timeout=30)
        return client.completions.create(model=MODEL, prompt=f"concurrent request {i}", max_tokens=24, temperature=0,
                                         extra_body=NO_EOS)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    assert all(r.usage.completion_tokens == 24 for r in results)
    assert len({r.controlplane["requests"][0]["worker_id"] for r in results}) == 2  # both replicas served
    metrics = httpx.get(f"{daemon.base}/metrics").text
    singles = sum(_value(metrics, "controlplane_batch_size_bucket", le="1.0", worker=w) for w in _workers(metrics))
    total = sum(_value(metrics, "controlplane_batch_size_count", worker=w) for w in _workers(metrics))
    assert total > singles, "some batches should hold more than one request"


def test_metrics_expose_counters_histograms_and_gauges(daemon):
    daemon.wait_ready()
    client = daemon.client()  # (its own requests: the test passes alone as after the others)
    for i in range(3):
        client.completions.create(model=MODEL, prompt=f"metrics {i}", max_tokens=8, temperature=0, extra_body=NO_EOS)
    assert httpx.post(f"{daemon.base}/v1/completions", json={"model": "no-such-model", "prompt": "x"}).status_code == 404
    text = httpx.get(f"{daemon.base}/metrics").text
    assert _value(text, "controlplane_requests_total", model=MODEL, status="completed") >= 3
    assert _value(text, "controlplane_request_ttft_seconds_count", model=MODEL) >= 3
    assert _value(text, "controlplane_request_e2e_seconds_count", model=MODEL) >= 3
    assert _value(text, "controlplane_tokens_total", model=MODEL, kind="generated") >= 8 * 3
    deadline = time.monotonic() + 10  # gauges are sampled every metrics_interval_s
    while _value(text, "controlplane_replicas", model=MODEL) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        text = httpx.get(f"{daemon.base}/metrics").text
    assert _value(text, "controlplane_replicas", model=MODEL) == 2
    assert "controlplane_queue_length{" in text
    assert _value(text, "controlplane_http_requests_total", route="/v1/completions", code="404") >= 1
    # A request looked up by id is counted under the route's template, not "other".
    rid = httpx.post(f"{daemon.base}/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2}
                     ).headers["x-request-id"]
    assert httpx.get(f"{daemon.base}/v1/requests/{rid}").status_code == 200
    assert httpx.get(f"{daemon.base}/v1/requests/no-such-id").status_code == 404
    text = httpx.get(f"{daemon.base}/metrics").text
    assert _value(text, "controlplane_http_requests_total", route="/v1/requests/{id}", code="200") >= 1
    assert _value(text, "controlplane_http_requests_total", route="/v1/requests/{id}", code="404") >= 1


def test_admin_endpoints_need_the_token(daemon):
    daemon.wait_ready()
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        r = httpx.get(f"{daemon.base}/admin/plugins", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(f"{daemon.base}/admin/drain").status_code == 401
    plugins = httpx.get(f"{daemon.base}/admin/plugins", headers=daemon.admin).json()["plugins"]
    assert {"continuous-batching", "prometheus-exporter", "sql-recorder"} <= {p["name"] for p in plugins}
    workers = daemon.workers()
    assert len(workers) == 2 and all(w["pid"] != daemon.proc.pid for w in workers)
    r = httpx.post(f"{daemon.base}/admin/reload", headers=daemon.admin)
    assert r.status_code == 200 and r.json()["reloaded"] and "continuous-batching" in r.json()["plugins"]
    assert daemon.client().completions.create(model=MODEL, prompt="after reload", max_tokens=2).usage


def test_clients_that_disconnect_have_their_requests_cancelled(daemon):
    daemon.wait_ready()
    body = {"model": MODEL, "prompt": "a very long answer", "max_tokens": 2000, "temperature": 0, **NO_EOS}
    with httpx.stream("POST", f"{daemon.base}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        rid = r.headers["x-request-id"]
        for n, _ in enumerate(r.iter_lines()):
            if n == 6:
                break  # the client hangs up mid-stream
    with pytest.raises(httpx.ReadTimeout):  # a client that gives up before the answer
        httpx.post(f"{daemon.base}/v1/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(w["running"] or w["waiting"] for w in daemon.workers()):
        time.sleep(0.1)
    assert not any(w["running"] or w["waiting"] for w in daemon.workers()), "the workers kept generating"
    metrics = httpx.get(f"{daemon.base}/metrics", timeout=10).text
    gone = _value(metrics, "controlplane_requests_total", model=MODEL, status="cancelled", reason_code="client_gone")
    assert gone == 2, rid  # (a timeout's code is timeout)
    # The stream's 200 went out at its start: how it ended is counted apart.
    assert _value(metrics, "controlplane_http_streams_total", route="/v1/completions", end="client_gone") == 1


def test_killed_worker_processes_retry_then_fail_the_request_clearly(daemon):
    """max_retries is 1: the first kill moves the request to the other worker, the second fails it."""
    daemon.wait_ready()
    while sum(w["state"] == "ready" for w in daemon.workers()) < 2:
        time.sleep(0.2)
    stream = daemon.client().completions.create(model=MODEL, prompt="survive a crash", max_tokens=1000,
                                                temperature=0, stream=True, extra_body=NO_EOS)
    chunks = iter(stream)
    killed: list[dict[str, Any]] = []

    def kill_the_busy_worker() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = [w for w in daemon.workers() if w["running"] and w["alive"]]
            if busy:
                os.kill(busy[0]["pid"], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.05)
        pytest.fail("the request never ran on a worker")

    received = 0
    with pytest.raises(openai.APIError, match="failed: worker failed 2 times.*killed by SIGKILL") as err:
        for _ in chunks:
            received += 1
            if received == 3 or received == 30:
                kill_the_busy_worker()
    assert received >= 30  # the stream went on after the first kill, on the other worker
    assert killed[0]["worker_id"] != killed[1]["worker_id"]
    assert str(killed[1]["pid"]) in str(err.value)


def test_sigterm_drains_in_flight_requests_then_exits_zero(daemon):
    daemon.wait_ready()  # replacements of the killed workers
    client = daemon.client()
    stream = client.completions.create(model=MODEL, prompt="drain me", max_tokens=200, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, extra_body=NO_EOS)
    chunks = iter(stream)
    first = next(chunks)
    daemon.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while httpx.get(f"{daemon.base}/readyz").status_code != 503:
        assert time.monotonic() < deadline, "readiness did not go false"
        time.sleep(0.02)
    assert httpx.get(f"{daemon.base}/readyz").json()["reason"] == "draining"
    late = httpx.post(f"{daemon.base}/v1/completions", json={"model": MODEL, "prompt": "too late", "max_tokens": 2})
    assert late.status_code == 503 and "draining" in late.json()["error"]["message"]
    rest = [first, *chunks]
    assert rest[-1].usage.completion_tokens == 200
    assert rest[-2].choices[0].finish_reason == "length"
    assert daemon.proc.wait(60) == 0, daemon.log_tail()

    from controlplane.storage import make_engine
    from controlplane.storage.queries import iter_rows, list_runs

    engine = make_engine(daemon.db_url)
    try:
        (run,) = list_runs(engine)
        assert run["mode"] == "live" and run["status"] == "finished", run
        requests = list(iter_rows(engine, run["id"], "requests"))
        decisions = list(iter_rows(engine, run["id"], "decisions"))
        events = list(iter_rows(engine, run["id"], "worker_events"))
    finally:
        engine.dispose()
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in requests:
        by_status.setdefault(row["status"], []).append(row)
    # the earlier tests' requests for models not served and their prompt over the context: rejected rows, as the
    # simulator records them
    assert {(r["reason_code"], r["model"]) for r in by_status.pop("rejected")} == {
        ("unknown_model", "gpt-4"), ("unknown_model", "no-such-model"), ("too_long", MODEL)}
    assert set(by_status) == {"completed", "failed", "cancelled"} and len(by_status["failed"]) == 1
    assert {r["reason"] for r in by_status["cancelled"]} == {"client disconnected"}
    assert len(by_status["cancelled"]) == 2 and all(r["output_tokens"] < 2000 for r in by_status["cancelled"])
    assert "killed by SIGKILL" in by_status["failed"][0]["reason"]
    for row in by_status["completed"]:
        assert row["arrival_s"] <= row["scheduled_s"] <= row["first_token_s"] <= row["finish_s"] <= run["sim_end_s"]
        assert row["e2e_s"] == pytest.approx(row["finish_s"] - row["arrival_s"])
    assert max(r["output_tokens"] for r in by_status["completed"]) == 200  # the drained one
    sizes = [d["payload"]["prefill"] + d["payload"]["decode"] for d in decisions if d["action"] == "batch"]
    assert max(sizes) > 1
    # (a replacement asked for once the drain began is refused as unplaced, a start of no worker: whether one is
    # depends on when the drain began against the replacements' starts)
    failed = [e for e in events if e["kind"] == "failed" and not (e["detail"] or {}).get("unplaced")]
    assert len(failed) == 2 and all("SIGKILL" in e["detail"]["reason"] for e in failed)
    ready = {e["worker_id"] for e in events if e["kind"] == "ready"}
    started = {e["worker_id"] for e in events if e["kind"] == "starting"}
    stopped = {e["worker_id"] for e in events if e["kind"] == "stopped"}
    # the replacements, stopped at shutdown: every one that got ready, and (timing-dependent) one still loading
    # when the drain began, stopped without having been ready
    assert stopped and ready - {e["worker_id"] for e in failed} <= stopped <= started
    assert run["summary"]["num_failed"] == 1 and json.dumps(run["summary"])


# --- helpers --------------------------------------------------------------------------------------


def _value(text: str, name: str, **labels: str) -> float:
    """A sample's value from the Prometheus text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _workers(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.labels["worker"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "controlplane_batch_size_count"
    }
