"""A reload that leaves no API keys while the daemon requires them: refused unless the config says so."""

from __future__ import annotations

import logging

from controlplane.live.api_keys import hash_key
from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready

TOKEN = "admin-token"
MODELS = "cluster:\n  models:\n    - {name: tiny, replicas: 1, worker: {preset: tiny-llama}}\n"
KEYS = f"auth:\n  api_keys:\n    - {{sha256: {hash_key('key-a')}, tenant: team-a}}\n"


def test_a_reload_without_the_auth_section_is_refused_and_an_explicit_empty_list_warns(tmp_path, caplog):
    # the auth block removed: the reload answered api_keys 0 and every keyless request got 200 (an INFO line only)
    from fastapi.testclient import TestClient

    path = tmp_path / "daemon.yaml"
    path.write_text(MODELS + KEYS)
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)
    caplog.set_level(logging.INFO, logger="controlplane.daemon")
    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        admin = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/models").status_code == 401
        for text in (MODELS, MODELS + "auth: {}\n"):
            path.write_text(text)
            r = client.post("/admin/reload", headers=admin)
            assert r.status_code == 400, r.text
            assert "auth: {api_keys: []}" in r.json()["error"]["message"] and "Reload refused" in r.text
            assert client.get("/v1/models").status_code == 401  # the keys are kept
            assert client.get("/v1/models", headers={"authorization": "Bearer key-a"}).status_code == 200
        path.write_text(MODELS + "auth: {api_keys: []}\n")
        r = client.post("/admin/reload", headers=admin)
        assert r.status_code == 200 and r.json()["api_keys"] == 0 and "API keys turned off" in r.json()["warning"]
        assert client.get("/v1/models").status_code == 200
        path.write_text(MODELS)  # no keys before, none now: nothing to refuse
        assert client.post("/admin/reload", headers=admin).status_code == 200
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "controlplane.daemon"]
    assert sum("API keys turned off" in m for m in warned) == 1
    assert sum("no auth.api_keys" in m for m in warned) == 2
