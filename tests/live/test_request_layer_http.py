"""The request-layer plugins behind the daemon: a tenant over its token rate gets HTTP 429 with
Retry-After and the ``rate_limited`` code (in process, on a thread pool)."""

from __future__ import annotations


import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready


@pytest.fixture(scope="module")
def http():
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1)
    plugins = cfg.plugins.model_copy(update={
        "enabled": ["tenant-quota", *cfg.plugins.enabled],
        "settings": {**cfg.plugins.settings,
                     "tenant-quota": {"tenants": {"alice": {"tokens_per_s": 1.0, "burst_tokens": 20}}}},
    })
    cfg = cfg.model_copy(update={"plugins": plugins})
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        yield client


def test_a_tenant_over_its_token_rate_gets_429_with_retry_after(http):
    body = {"prompt": [5, 6, 7, 8, 9], "max_tokens": 5, "temperature": 0, "ignore_eos": True}
    first = http.post("/v1/completions", json={**body, "user": "alice"})
    assert first.status_code == 200  # 10 of alice's 20 tokens
    second = http.post("/v1/completions", json={**body, "user": "alice"})
    assert second.status_code == 200
    third = http.post("/v1/completions", json={**body, "user": "alice"})
    assert third.status_code == 429 and third.headers.get("retry-after")
    err = third.json()["error"]
    assert err["code"] == "rate_limited" and "tenant 'alice'" in err["message"]
    assert http.post("/v1/completions", json={**body, "user": "bob"}).status_code == 200  # bob has no limit
