"""A pool that breaks (the Ray pool's head is gone: `WorkerPool.on_broken`) stops the daemon at once, as a second
Ctrl+C does: it is no longer ready, a request gets a quick 503, the run is closed ``interrupted``; `serve` then
exits 1. (The daemon froze before: a Ray call on the event loop waited for the dead GCS until Ray ended the process.)"""

from __future__ import annotations

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from tests.live.daemon_process import wait_until_ready


def test_a_broken_pool_stops_the_daemon_and_closes_its_run(tmp_path):
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1, db=f"sqlite:///{tmp_path / 'run.db'}")
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, journal_dir=tmp_path / "j"))
    reason = "the Ray head is gone: its GCS at 10.0.0.1:6379 does not answer"
    with TestClient(daemon.app, raise_server_exceptions=False) as client:
        wait_until_ready(client)
        assert daemon.driver.pool.on_broken is not None
        client.portal.call(daemon.driver.pool.on_broken, reason)  # (on the loop, as the pool calls it)
        assert daemon.pool_error == reason and daemon.exiting and not daemon.drained_cleanly
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 503
    import sqlite3

    with sqlite3.connect(tmp_path / "run.db") as db:
        assert db.execute("select status from run").fetchall() == [("interrupted",)]
