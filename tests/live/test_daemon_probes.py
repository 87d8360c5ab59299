"""``/readyz`` when no worker is up: "scaled to zero" (200) only where an autoscaler keeps a model at zero on
purpose and starts one for a request; workers that died under `fixed-replicas` are being replaced (503)."""

from __future__ import annotations

import json
import time

from controlplane.events import WorkerFailed
from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from controlplane.live.daemon_probes import readyz
from tests.live.daemon_process import wait_until_ready


def _daemon(tmp_path, plugins: str | None, workers: int) -> Daemon:
    path = None
    if plugins is not None:
        path = tmp_path / "cfg.yaml"
        path.write_text(plugins)
    cfg, _ = daemon_config(path, workers=workers)
    return Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, request_timeout_s=5), record=False)


def test_every_fixed_replica_dead_is_not_scaled_to_zero(tmp_path):
    from fastapi.testclient import TestClient

    daemon = _daemon(tmp_path, None, 2)  # fixed-replicas
    driver = daemon.driver
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        deadline = time.monotonic() + 60
        while client.get("/readyz").json()["workers"] != {"ready": 2} and time.monotonic() < deadline:
            time.sleep(0.1)  # both ready: their deaths are crashes, not failed starts

        async def kill_both_then_probe():  # on the daemon's loop: no tick in between
            for wid in list(driver.core.workers):
                driver._feed(WorkerFailed(driver.now_s(), wid, "worker process 1 was killed by SIGKILL"))
            assert not driver.core.workers  # (none left, none starting yet)
            return await readyz(driver)

        r = client.portal.call(kill_both_then_probe)
    body = json.loads(r.body)
    assert r.status_code == 503, body
    assert body["ready"] is False and body["reason"].startswith("no worker is ready yet")
    assert "scaled to zero" not in body["reason"] and "cannot start" not in body["reason"]


def test_scale_to_zero_autoscalers_read_ready_at_zero(tmp_path):
    from fastapi.testclient import TestClient

    hpa0 = ("plugins:\n  enabled: [queue-limit, least-loaded, continuous-batching, hpa, static-memory]\n"
            "  settings:\n    hpa: {min_replicas: 0}\n")
    hpa1 = "plugins:\n  enabled: [queue-limit, least-loaded, continuous-batching, hpa, static-memory]\n"
    for text, code in ((hpa0, 200), (hpa1, 503)):
        daemon = _daemon(tmp_path, text, 0)
        with TestClient(daemon.app) as client:
            r = client.get("/readyz")
        assert r.status_code == code, (text, r.json())
        if code == 200:
            assert r.json()["reason"].startswith("scaled to zero: a request starts a worker")
        else:  # hpa's floor is 1: it starts one at its first tick, and the daemon is not ready until it is
            assert r.json()["reason"].startswith("no worker is ready yet")
