"""A live request for a model no deployment serves is recorded as the simulator records it: a rejected row with
``reason_code`` ``unknown_model`` under the name asked for, counted in the metrics, its 404 carrying
``x-request-id`` (controlplane.live.core_refusals)."""

from __future__ import annotations

import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from controlplane.live.prometheus import UNKNOWN_MODEL_LABEL
from tests.live.daemon_process import wait_until_ready

CONFIG = ("cluster:\n  models:\n"
          "    - {name: alpha, replicas: 1, worker: {preset: tiny-llama}}\n"
          "    - {name: beta, replicas: 1, worker: {preset: tiny-llama}}\n")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(responses, the run's id, its database): a completion and a chat for ``gpt-9``, then one for ``alpha``."""
    from fastapi.testclient import TestClient

    tmp = tmp_path_factory.mktemp("unknown-model")
    path = tmp / "two.yaml"
    path.write_text(CONFIG)
    db = f"sqlite:///{tmp / 'run.db'}"
    cfg, _ = daemon_config(path, db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=60, journal_dir=tmp / "j"))
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        answers = [
            client.post("/v1/completions", json={"model": "gpt-9", "prompt": [5, 6, 7], "max_tokens": 4,
                                                 "user": "acme", "priority": 3}),
            client.post("/v1/chat/completions",
                        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
            client.post("/v1/completions", json={"model": "alpha", "prompt": "hi", "max_tokens": 2}),
        ]
        metrics = client.get("/metrics").text
        run_id = daemon.driver.run_id
    return answers, metrics, run_id, db


def test_an_unknown_model_is_still_404_and_names_its_request(served):
    (completion, chat, ok), _, _, _ = served
    for r in (completion, chat):
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "unknown_model" and r.json()["error"]["param"] == "model"
        assert "not served here; served: alpha, beta" in r.json()["error"]["message"]
        assert r.headers["x-request-id"].startswith("req-")
    assert completion.headers["x-request-id"] != chat.headers["x-request-id"]
    assert ok.status_code == 200


def test_an_unknown_model_has_a_rejected_row_under_the_name_asked_for(served):
    from controlplane.testing import stored_rows

    (completion, chat, ok), _, run_id, db = served
    rows = {r["request_id"]: r for r in stored_rows(db, run_id, "requests")}
    row = rows[completion.headers["x-request-id"]]
    assert (row["status"], row["reason_code"], row["model"]) == ("rejected", "unknown_model", "gpt-9")
    assert (row["tenant"], row["priority"], row["prompt_tokens"], row["max_output_tokens"]) == ("acme", 3, 3, 4)
    assert rows[chat.headers["x-request-id"]]["reason_code"] == "unknown_model"
    assert rows[ok.headers["x-request-id"]]["status"] == "completed"


def test_an_unknown_model_is_counted_in_the_metrics_under_one_label(served):
    _, metrics, _, _ = served
    line = (f'controlplane_requests_total{{model="{UNKNOWN_MODEL_LABEL}",reason_code="unknown_model",'
            f'status="rejected"}} 2.0')
    assert line in metrics, [m for m in metrics.splitlines() if m.startswith("controlplane_requests_total")]
    assert 'model="gpt-9"' not in metrics  # a client's made-up names are not time series
    assert f'controlplane_requests_arrived_total{{model="{UNKNOWN_MODEL_LABEL}"}} 2.0' in metrics


def test_a_library_submit_for_an_unknown_model_is_recorded_under_its_own_id(tmp_path):
    """`LiveDriver.submit` (a live trace replay, a benchmark) records it too, keeping the id it was given."""
    import asyncio

    from controlplane.live.driver import LiveDriver
    from controlplane.live.http_errors import ModelNotFound
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config, stored_rows

    db = f"sqlite:///{tmp_path / 'live.db'}"
    cfg = make_config(storage={"url": db}, cluster={"models": [
        {"name": "alpha", "replicas": 1, "worker": {"preset": "tiny-llama"}}]})

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            with pytest.raises(ModelNotFound) as refused:
                await driver.submit([1, 2], model="gpt-9", request_id="trace-7", tenant="t", max_tokens=5)
        finally:
            await driver.close()
        return refused.value, driver.run_id

    error, run_id = asyncio.run(main())
    assert error.headers == {"x-request-id": "trace-7"} and error.http_status == 404
    (row,) = stored_rows(db, run_id, "requests")
    assert (row["request_id"], row["status"], row["reason_code"], row["model"], row["tenant"]) == (
        "trace-7", "rejected", "unknown_model", "gpt-9", "t")
