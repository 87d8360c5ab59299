"""Clients that leave just before their held reply is ready, over a real socket to the daemon served by uvicorn.

The daemon looked at a client's connection only every 0.25 s while it waited for the answer: a reply produced in
between was recorded ``completed`` without a code, counted as a 200 (a held stream as ``end="done"``) and logged
``200`` by the access log, though its client had left (an SRE soak: 48 of 261 clients that gave up after 0.4 s).
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from controlplane.live.daemon import Daemon, DaemonOptions, listen
from controlplane.live.daemon_logging import ACCESS_LOGGER, AccessLog
from controlplane.live.guardian_models import RuleGuardian
from controlplane.testing import make_config, stored_rows

uvicorn = pytest.importorskip("uvicorn")


class _Gate:
    """Holds every rules check until the test lets it answer: the reply is ready exactly when the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered: queue.Queue[str] = queue.Queue()
        self.opened: queue.Queue[None] = queue.Queue()
        check = RuleGuardian.check

        def held_check(guardian: RuleGuardian, text: str):
            self.entered.put(text)
            self.opened.get(timeout=60)
            return check(guardian, text)

        monkeypatch.setattr(RuleGuardian, "check", held_check)


class _Served:
    """The daemon's app under uvicorn on a thread, on a free port, its access log kept."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = f"sqlite:///{tmp_path / 'gone.db'}"
        cfg = make_config(
            storage={"url": self.db},
            cluster={"models": [{"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama"}}]},
            guardians={"models": [{"name": "rules", "kind": "rules", "blocklist": ["never said"]}]},
            plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "stages": ["output"],
                                                       "guardians": ["rules"]}}})
        self.daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1, journal_dir=tmp_path / "journal"))
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.access: list[str] = []
        self.server = uvicorn.Server(uvicorn.Config(AccessLog(self.daemon.app), log_config=None, access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Served:
        handler = logging.Handler()
        handler.emit = lambda record: self.access.append(record.getMessage())  # type: ignore[method-assign]
        self.handler, logger = handler, logging.getLogger(ACCESS_LOGGER)
        self.level, logger.level = logger.level, logging.INFO
        logger.addHandler(handler)
        self.thread.start()
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the daemon never became ready"
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()
        logger = logging.getLogger(ACCESS_LOGGER)
        logger.removeHandler(self.handler)
        logger.level = self.level


def _post(port: int, body: dict) -> socket.socket:
    """A raw client: the request sent, the answer not read yet (closing the socket is leaving)."""
    payload = json.dumps(body).encode()
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    client.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                   b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
    return client


def _read_all(client: socket.socket) -> bytes:
    """The whole answer (the request asked the server to close the connection after it)."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_reply_ready_just_after_its_client_left_is_client_gone_in_rows_metrics_and_access_log(tmp_path, monkeypatch):
    gate = _Gate(monkeypatch)
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 4, "ignore_eos": True}
    with _Served(tmp_path) as served:
        for stream in (True, False, True, False):  # held streams and plain answers whose clients leave
            client = _post(served.port, {**body, "stream": stream})
            gate.entered.get(timeout=60)  # generated; its answer's check holds the reply
            client.close()  # the client leaves...
            time.sleep(0.05)
            gate.opened.put(None)  # ... and the reply is ready 50 ms later
        for stream in (True, False):  # clients that stay get their answers
            client = _post(served.port, {**body, "stream": stream})
            gate.entered.get(timeout=60)
            gate.opened.put(None)
            answer = _read_all(client)
            client.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer
        metrics = httpx.get(f"http://127.0.0.1:{served.port}/metrics", timeout=10).text
        run_id = served.daemon.driver.run_id
    rows = {r["request_id"]: r for r in stored_rows(served.db, run_id, "requests")}
    gone, stayed = ["req-0", "req-1", "req-2", "req-3"], ["req-4", "req-5"]
    assert {rid: (rows[rid]["status"], rows[rid]["reason_code"]) for rid in gone} == {
        rid: ("cancelled", "client_gone") for rid in gone}
    assert [(rows[rid]["status"], rows[rid]["reason_code"]) for rid in stayed] == [("completed", None)] * 2

    def value(name: str, **labels: str) -> float:
        for line in metrics.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    route = "/v1/completions"
    assert value("controlplane_http_requests_total", route=route, code="499") == 4
    assert value("controlplane_http_requests_total", route=route, code="200") == 2
    assert value("controlplane_http_streams_total", route=route, end="done") == 1
    assert value("controlplane_requests_total", status="cancelled", reason_code="client_gone") == 4
    answered = [line for line in served.access if '"POST /v1/completions' in line]
    assert [(line.split('" ')[1].split()[0], line.rsplit("x-request-id=", 1)[1]) for line in answered] == [
        ("499", rid) for rid in gone] + [("200", rid) for rid in stayed], answered
