"""API keys: hashed in the config, checked in constant time, the key's tenant on every request."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, select

from controlplane.config import load_config
from controlplane.errors import ConfigError
from controlplane.live.api_keys import KeyRing, hash_key, new_key
from tests.live.daemon_process import wait_until_ready

KEY_A, KEY_B = "cp-key-of-team-a", "cp-key-of-team-b"


def _keys_config() -> dict:
    return {"auth": {"api_keys": [{"sha256": hash_key(KEY_A), "tenant": "team-a", "name": "alice"},
                                  {"sha256": hash_key(KEY_B), "tenant": "team-b"}]}}


def _keys_and_quota_config() -> dict:
    """Keys, and a tight token bucket for team-a only (each test request costs about 7 tokens)."""
    from controlplane.config import DEFAULT_PLUGINS

    return {**_keys_config(), "plugins": {
        "enabled": [*DEFAULT_PLUGINS, "tenant-quota"],  # after queue-limit, which defers when admitting
        "settings": {"tenant-quota": {"tenants": {"team-a": {"tokens_per_s": 0.5, "burst_tokens": 20}}}},
    }}


def test_key_ring_answers_the_tenant_of_a_listed_key_only():
    ring = KeyRing(load_config(overrides=_keys_config()).auth.api_keys)
    assert ring.enabled
    assert ring.tenant_for(KEY_A) == "team-a" and ring.tenant_for(KEY_B) == "team-b"
    assert ring.tenant_for("cp-key-of-team-c") is None and ring.tenant_for("") is None
    assert ring.tenant_for(hash_key(KEY_A)) is None  # the digest itself is no key
    assert not KeyRing([]).enabled


def test_new_keys_are_random_and_long():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("cp-") and len(a) >= 40


@pytest.mark.parametrize("entry, key", [
    ({"sha256": "not-hex", "tenant": "t"}, "auth.api_keys.0.sha256"),
    ({"sha256": hash_key("k")}, "auth.api_keys.0.tenant"),
    ({"sha256": hash_key("k"), "tenant": "t", "secret": "k"}, "auth.api_keys.0.secret"),
])
def test_invalid_key_entries_name_the_key(entry, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides={"auth": {"api_keys": [entry]}})


def test_the_same_key_twice_is_an_error():
    entry = {"sha256": hash_key(KEY_A), "tenant": "t"}
    with pytest.raises(ConfigError, match="same key"):
        load_config(overrides={"auth": {"api_keys": [entry, entry]}})


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """An in-process daemon (thread pool, one tiny-llama worker) that needs API keys and records to
    SQLite: ``(client, db_url)``; the run is closed when the module's tests are done."""
    from fastapi.testclient import TestClient

    from controlplane.live.daemon import Daemon, DaemonOptions
    from controlplane.live.daemon_config import daemon_config

    db = f"sqlite:///{tmp_path_factory.mktemp('keys') / 'runs.db'}"
    path = tmp_path_factory.mktemp("cfg") / "keys.yaml"
    import yaml

    path.write_text(yaml.safe_dump(_keys_and_quota_config()))
    cfg, _ = daemon_config(path, workers=1, db=db)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, default_max_tokens=4))
    with TestClient(daemon.app, raise_server_exceptions=False) as client:
        wait_until_ready(client)
        yield client, db, daemon.driver.run_id


BODY = {"prompt": "hello", "max_tokens": 2, "ignore_eos": True, "user": "someone-else"}


@pytest.mark.parametrize("headers, message", [
    ({}, "No API key provided"),
    ({"authorization": "Bearer cp-wrong"}, "Incorrect API key"),
    ({"authorization": f"Basic {KEY_A}"}, "No API key provided"),
])
def test_requests_without_a_valid_key_get_401_in_the_openai_shape(keyed, headers, message):
    client, _, _ = keyed
    for method, path, body in (("POST", "/v1/completions", BODY), ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and message in error["message"]
        assert r.headers["www-authenticate"] == "Bearer"


def test_an_unauthenticated_invalid_body_gets_401_not_the_validation_details(keyed):
    client, _, _ = keyed
    r = client.post("/v1/completions", json={"prompt": "x", "temperature": "hot"})
    assert r.status_code == 401


@pytest.mark.parametrize("body", [b"garbage", b'{"prompt": "x", "temperature": NaN}', b'{"prompt": "' + b"x" * (3 << 20)
                                  + b'"}', b"[" * 100 + b"]" * 100])
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer cp-wrong"}])
def test_the_key_is_checked_before_the_body_guard_reads_the_body(keyed, body, headers):
    """The body guard (invalid JSON, a non-finite number, over 2 MiB, nested too deep) answered 400 / 413 to a
    caller without a valid key, before the key was looked at."""
    client, _, _ = keyed
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code == 401, r.text[:200]
    assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    ok = client.post("/v1/completions", content=body, headers={"content-type": "application/json",
                                                               "authorization": f"Bearer {KEY_B}"})
    assert ok.status_code in (400, 413)  # with a valid key, the guard's own answer


def test_a_valid_key_is_served_and_its_tenant_recorded_in_place_of_the_user_field(keyed):
    client, db, run_id = keyed
    r = client.post("/v1/completions", json=BODY, headers={"authorization": f"Bearer {KEY_B}"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2
    rid = r.headers["x-request-id"]
    assert client.get("/v1/models", headers={"authorization": f"Bearer {KEY_A}"}).status_code == 200

    from controlplane.storage.models import Request, Run

    engine = create_engine(db)
    deadline = time.monotonic() + 30
    tenant = None
    while tenant is None and time.monotonic() < deadline:  # the recorder writes in the background
        with engine.connect() as conn:
            tenant = conn.execute(select(Request.tenant).where(Request.run_id == run_id,
                                                               Request.request_id == rid)).scalar()
        time.sleep(0.1)
    assert tenant == "team-b"
    with engine.connect() as conn:
        stored = str(conn.execute(select(Run.config).where(Run.id == run_id)).scalar_one())
    assert hash_key(KEY_B) in stored and KEY_A not in stored and KEY_B not in stored  # digests, never keys


def test_a_keys_tenant_quota_answers_429_with_the_buckets_retry_after(keyed):
    client, _, _ = keyed
    a, b = {"authorization": f"Bearer {KEY_A}"}, {"authorization": f"Bearer {KEY_B}"}
    body = {"prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": True}
    codes = [client.post("/v1/completions", json=body, headers=a).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429, codes  # 20 tokens of burst: 7 + 7, then empty
    r = client.post("/v1/completions", json=body, headers=a)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert "team-a" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 20  # the bucket's own refill time, not a fixed guess
    assert all(client.post("/v1/completions", json=body, headers=b).status_code == 200 for _ in range(4))
