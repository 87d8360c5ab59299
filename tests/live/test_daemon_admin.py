"""The daemon's admin routes (`controlplane.live.daemon_admin`): a reload whose guardian plans name a
guardian the running daemon does not run is refused, the old plugins kept."""

from __future__ import annotations

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready

TOKEN = "admin-token"

CONFIG = """\
cluster:
  models:
    - {name: tiny, replicas: 1, worker: {preset: tiny-llama}}
plugins:
  settings:
    sampled-guardian: {rate: 1.0, mode: sync, guardians: [PLAN], stages: [input]}
guardians:
  models:
    - {name: rules, kind: rules, blocklist: [forbidden], gpus_per_replica: 0}
DECLARED"""


def test_a_reload_naming_a_guardian_the_daemon_does_not_run_is_refused(tmp_path):
    # the reload answered {"reloaded": true, ..., "needs_restart": ["guardians"]}, and then every check
    # answered "unavailable" (failing open): "forbidden" was served
    from fastapi.testclient import TestClient

    path = tmp_path / "daemon.yaml"
    path.write_text(CONFIG.replace("PLAN", "rules").replace("DECLARED", ""))
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)
    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        admin = {"authorization": f"Bearer {TOKEN}"}
        rules2 = "    - {name: rules2, kind: rules, blocklist: [forbidden, secret], gpus_per_replica: 0}\n"
        for declared, why in ((rules2, "the config declares them, but guardians start with the daemon"),
                              ("", "guardians.models does not declare them")):
            path.write_text(CONFIG.replace("PLAN", "rules2").replace("DECLARED", declared))
            r = client.post("/admin/reload", headers=admin)
            assert r.status_code == 400, r.json()
            message = r.json()["error"]["message"]
            assert ("plugins.settings.sampled-guardian names guardian(s) 'rules2' that the running daemon does "
                    "not run (it runs: rules)") in message and why in message and "old plugins kept" in message
            # the old plan still checks: the prompt is refused by rules
            blocked = client.post("/v1/completions", json={"model": "tiny", "prompt": "a forbidden thing",
                                                           "max_tokens": 2})
            assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "blocked", blocked.json()
        # a reload that keeps to the running guardians goes through (a changed section still needs a restart)
        path.write_text(CONFIG.replace("PLAN", "rules").replace("DECLARED", rules2))
        r = client.post("/admin/reload", headers=admin)
        assert r.status_code == 200 and r.json()["needs_restart"] == ["guardians"]


REDIS_CONFIG = """\
cluster:
  models:
    - {name: tiny, replicas: 1, worker: {preset: tiny-llama}}
plugins:
  enabled: [exact-cache, queue-limit, least-loaded, continuous-batching, fixed-replicas]
  settings:
    exact-cache: {backend: redis, redis_url: "URL"}
"""


def test_a_redis_password_is_shown_as_stars_by_the_plugin_listing_and_a_refused_reload(tmp_path):
    """GET /admin/plugins showed exact-cache's redis_url with its password in clear; so did the redis_url
    validator's error, the 400 body of /admin/reload (``got 'http://:PASSWORD@...'``), ``?password=`` too."""
    from fastapi.testclient import TestClient

    from tests.fixtures.common import REDIS_URL

    secret = "RedisS3cretPW"
    host = REDIS_URL.split("://", 1)[1]
    path = tmp_path / "daemon.yaml"
    path.write_text(REDIS_CONFIG.replace("URL", f"redis://:{secret}@{host}?password={secret}"))
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)
    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        admin = {"authorization": f"Bearer {TOKEN}"}
        listing = client.get("/admin/plugins", headers=admin)
        assert listing.status_code == 200 and secret not in listing.text
        (cache,) = [p for p in listing.json()["plugins"] if p["name"] == "exact-cache"]
        assert cache["settings"]["redis_url"] == f"redis://:***@{host}?password=***"
        for url in (f"http://:{secret}@{host}", f"http://{host}?password={secret}"):
            path.write_text(REDIS_CONFIG.replace("URL", url))
            r = client.post("/admin/reload", headers=admin)
            assert r.status_code == 400 and secret not in r.text, r.text
            message = r.json()["error"]["message"]
            assert "plugins.settings.exact-cache.redis_url: " in message, r.text
            assert f"expected a redis://, rediss:// or unix:// URL, got '{url.replace(secret, '***')}'" in message


def test_admin_drain_resume_and_reload_are_logged(tmp_path, caplog):
    """A drain that stays up, a resume and a reload, accepted or refused, left no line in the daemon's log."""
    import logging

    from fastapi.testclient import TestClient

    path = tmp_path / "daemon.yaml"
    path.write_text("cluster:\n  models:\n    - {name: tiny, replicas: 1, worker: {preset: tiny-llama}}\n")
    flags = {"db": None, "workers": None, "preset": None, "model_path": None, "precision": None, "model_name": None}
    cfg, overrides = daemon_config(path, **flags)
    options = DaemonOptions(pool="thread", admin_token=TOKEN, cpu_threads=1, config_path=path, overrides=overrides,
                            config_flags=flags)
    caplog.set_level(logging.INFO, logger="controlplane.daemon")
    caplog.set_level(logging.INFO, logger="controlplane.live.driver")
    with TestClient(Daemon(cfg, options, record=False).app) as client:
        wait_until_ready(client)
        admin = {"authorization": f"Bearer {TOKEN}"}
        assert client.post("/admin/drain", headers=admin, json={"exit": False}).status_code == 202
        assert client.post("/admin/resume", headers=admin).status_code == 200
        assert client.post("/admin/reload", headers=admin).status_code == 200
        path.write_text(path.read_text() + "plugins:\n  enabled: [no-such-plugin]\n")
        assert client.post("/admin/reload", headers=admin).status_code == 400
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "controlplane.daemon"]
    said = [(level, msg) for level, msg in lines if msg.startswith("POST /admin/")]
    assert [(level, msg.split(":")[0]) for level, msg in said] == [
        ("INFO", "POST /admin/drain"), ("INFO", "POST /admin/resume"), ("INFO", "POST /admin/reload"),
        ("WARNING", "POST /admin/reload refused, old plugins kept")], lines
    assert "draining, 0 requests pending; staying up" in said[0][1]
    assert f"plugins reloaded from {path}: " in said[2][1] and "continuous-batching" in said[2][1]
    assert "no-such-plugin" in said[3][1]
    # and the run's own events (`controlplane.live.event_log`, one of the live driver's plugins): its worker stopped
    assert "worker tiny-0 stopped" in [r.getMessage() for r in caplog.records if r.name == "controlplane.live.driver"]
