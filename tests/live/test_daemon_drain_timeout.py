"""A drain that times out: the clients still waiting get their answers (503 ``unavailable``; a stream its error
event and ``[DONE]``), the process exits within the timeout and a short grace, and the cut-off requests are
recorded as ``in_flight`` in an ``interrupted`` run. uvicorn waited a second full timeout, then cancelled the
handlers: a plain-text 500, a stream cut without an error, recorded as cancelled by a "client disconnected"."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from controlplane.live.daemon import ANSWER_GRACE_S
from controlplane.storage import iter_rows, list_runs, make_engine
from tests.live.daemon_process import DaemonProcess

MODEL = "tiny-llama"
LONG = {"model": MODEL, "max_tokens": 2000, "ignore_eos": True}  # far longer than the drain's timeout


class _LongClients:
    """Two plain requests and one stream, each far longer than any drain, on their own threads."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.answers: dict[str, httpx.Response] = {}
        self.stream_lines: list[str] = []

    def _post(self, i: int) -> None:
        self.answers[f"plain{i}"] = httpx.post(f"{self.daemon.base}/v1/completions", timeout=120,
                                               json={**LONG, "prompt": [7, i, 7]})

    def _stream(self) -> None:
        with httpx.stream("POST", f"{self.daemon.base}/v1/completions", timeout=120,
                          json={**LONG, "prompt": [8, 8, 8], "stream": True}) as r:
            self.answers["stream"] = r
            self.stream_lines.extend(line for line in r.iter_lines() if line)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._post, args=(i,)) for i in range(2)]
        threads.append(threading.Thread(target=self._stream))
        for t in threads:
            t.start()
        return threads


def test_a_timed_out_drain_answers_503_and_records_the_requests_in_flight(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'drain.db'}"
    daemon = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--cpu-threads", "1", "--db", db_url,
                                      "--drain-timeout", "1"])
    clients = _LongClients(daemon)
    answers, stream_lines = clients.answers, clients.stream_lines
    try:
        daemon.wait_ready()
        threads = clients.start()
        deadline = time.monotonic() + 60
        while len(stream_lines) < 3:  # the stream's first tokens: every request is being served
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.02)
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0, daemon.log_tail()
        took = time.monotonic() - signalled
        for t in threads:
            t.join(30)
    finally:
        daemon.close()
    assert took < 1 + ANSWER_GRACE_S + 3, f"exited {took:.1f}s after SIGTERM"
    for name in ("plain0", "plain1"):
        r = answers[name]
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.json()["error"]["code"] == "unavailable"
        assert "stopped before the request finished" in r.json()["error"]["message"]
    assert stream_lines[-1] == "data: [DONE]"
    error = json.loads(stream_lines[-2].removeprefix("data: "))
    assert error["error"]["code"] == "unavailable", stream_lines[-3:]
    assert "Exception in ASGI application" not in daemon.log_path.read_text()

    engine = make_engine(db_url)
    try:
        (run,) = list_runs(engine)
        rows = list(iter_rows(engine, run["id"], "requests"))
    finally:
        engine.dispose()
    assert run["status"] == "interrupted"
    assert sorted(r["status"] for r in rows) == ["in_flight"] * 3, [(r["status"], r["reason"]) for r in rows]


def test_a_second_sigint_answers_every_client_as_a_timed_out_drain_does(tmp_path: Path) -> None:
    """Ctrl+C twice mid-drain: each client still waiting gets its 503 ``unavailable`` (a stream its
    error event and ``[DONE]``) at once, one log line says why, and nothing is a traceback. It was
    uvicorn's forced exit: plain-text 500s, streams cut without an error, hundreds of traceback lines."""
    db_url = f"sqlite:///{tmp_path / 'int.db'}"
    daemon = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--cpu-threads", "1", "--db", db_url,
                                      "--drain-timeout", "120"])
    clients = _LongClients(daemon)
    answers, stream_lines = clients.answers, clients.stream_lines
    try:
        daemon.wait_ready()
        threads = clients.start()
        deadline = time.monotonic() + 60
        while len(stream_lines) < 3:
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.02)
        daemon.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(60) == 0, daemon.log_tail()
        took = time.monotonic() - signalled
        for t in threads:
            t.join(30)
    finally:
        daemon.close()
    log = daemon.log_path.read_text()
    assert took < ANSWER_GRACE_S, f"exited {took:.1f}s after the second SIGINT"
    for name in ("plain0", "plain1"):
        r = answers[name]
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", (r.status_code, r.text)
    assert stream_lines[-1] == "data: [DONE]", stream_lines[-3:]
    assert json.loads(stream_lines[-2].removeprefix("data: "))["error"]["code"] == "unavailable"
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert log.count("received SIGINT again: stopping now") == 1, log[-3000:]
    engine = make_engine(db_url)
    try:
        (run,) = list_runs(engine)
    finally:
        engine.dispose()
    assert run["status"] == "interrupted"


def test_a_third_sigint_exits_without_a_traceback_and_closes_the_run(tmp_path: Path) -> None:
    """Ctrl+C three times (0.3 s, then 0.1 s apart) mid-stream: uvicorn's forced exit skipped the app's shutdown,
    so its lifespan task was cancelled at the exit, an ERROR traceback (``starlette/routing.py ... lifespan ...
    CancelledError``). The run is still closed, ``interrupted``, and the log holds no traceback."""
    db_url = f"sqlite:///{tmp_path / 'third.db'}"
    daemon = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--cpu-threads", "1", "--db", db_url,
                                      "--drain-timeout", "120"])
    clients = _LongClients(daemon)
    try:
        daemon.wait_ready()
        threads = clients.start()
        deadline = time.monotonic() + 60
        while len(clients.stream_lines) < 3:
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.02)
        for pause in (0.3, 0.1, 0):
            daemon.proc.send_signal(signal.SIGINT)
            time.sleep(pause)
        assert daemon.proc.wait(60) == 0, daemon.log_tail()
        for t in threads:
            t.join(30)
    finally:
        daemon.close()
    log = daemon.log_path.read_text()
    assert "Traceback" not in log and "Exception in 'lifespan' protocol" not in log, log[-3000:]
    engine = make_engine(db_url)
    try:
        (run,) = list_runs(engine)
    finally:
        engine.dispose()
    assert run["status"] == "interrupted"
