"""A request's choices (prompts x ``n``) under a tenant's quota are admitted together or not at all: one that can
never be admitted as a whole is a 400 before any choice is submitted, and a choice refused at its admission cancels
the ones admitted before it (in process, on a thread pool)."""

from __future__ import annotations

import re

import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready

QUOTA = {"tenants": {"pair": {"max_in_flight": 1}, "off": {"max_in_flight": 0},
                     "rate": {"tokens_per_s": 0.001, "burst_tokens": 25, "max_in_flight": 4},
                     "small": {"tokens_per_s": 1.0, "burst_tokens": 15}}}
BODY = {"prompt": [5, 6, 7, 8, 9], "max_tokens": 5, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def http():
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1)
    plugins = cfg.plugins.model_copy(update={
        "enabled": ["tenant-quota", *cfg.plugins.enabled],
        "settings": {**cfg.plugins.settings, "tenant-quota": QUOTA},
    })
    cfg = cfg.model_copy(update={"plugins": plugins})
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        yield client


def _counts(http) -> dict[str, float]:
    """``controlplane_requests_total`` by status, and the requests arrived."""
    text = http.get("/metrics").text
    out: dict[str, float] = {}
    for status, value in re.findall(r'^controlplane_requests_total\{[^}]*status="(\w+)"[^}]*\} (\S+)$', text, re.M):
        out[status] = out.get(status, 0.0) + float(value)
    out["arrived"] = sum(float(v) for v in re.findall(r"^controlplane_requests_arrived_total\{[^}]*\} (\S+)$",
                                                      text, re.M))
    return out


@pytest.mark.parametrize(("tenant", "says"), [("pair", "2 completions at once"), ("off", "suspended"),
                                               ("small", "need 20 tokens together")])
def test_choices_a_tenant_can_never_have_admitted_together_are_a_400_and_nothing_is_generated(http, tenant, says):
    """n=2 under max_in_flight 1 got 429 Retry-After: 1 for ever, while its first choice was generated,
    stored and counted completed. Now: 400 ``invalid`` (param n), no Retry-After, no choice submitted."""
    before = _counts(http)
    r = http.post("/v1/completions", json={**BODY, "n": 2, "user": tenant})
    assert r.status_code == 400, r.text
    assert "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["code"] == "invalid" and err["param"] == "n" and says in err["message"], err
    after = _counts(http)
    assert after == before  # nothing arrived, nothing completed
    if tenant != "off":
        assert http.post("/v1/completions", json={**BODY, "user": tenant}).status_code == 200  # one choice: fine


def test_a_choice_refused_at_admission_cancels_the_choices_admitted_before_it(http):
    first = http.post("/v1/completions", json={**BODY, "user": "rate"})
    assert first.status_code == 200  # about 10 of rate's 25 tokens
    before = _counts(http)
    r = http.post("/v1/completions", json={**BODY, "n": 2, "user": "rate"})  # the first fits, the second not
    assert r.status_code == 429 and r.headers.get("retry-after"), r.text
    assert r.json()["error"]["code"] == "rate_limited"
    after = _counts(http)
    assert after.get("completed", 0) == before.get("completed", 0)  # its admitted choice was not served
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1
    assert after.get("rejected", 0) == before.get("rejected", 0) + 1
    text = http.get("/metrics").text  # recorded as what it was: cancelled because its sibling was rate limited
    assert re.search(r'^controlplane_requests_total\{[^}]*reason_code="rate_limited"[^}]*status="cancelled"[^}]*\} 1',
                     text, re.M) or re.search(r'^controlplane_requests_total\{[^}]*status="cancelled"[^}]*'
                                              r'reason_code="rate_limited"[^}]*\} 1', text, re.M), text
