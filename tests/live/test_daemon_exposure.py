"""A daemon reachable from a network: its connection limits, accept errors logged once a minute, the open files
limit raised, and the start's warning when it listens beyond loopback with no API keys."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import httpx
import pytest

from controlplane.live.daemon_exposure import (
    ACCEPT_ERROR,
    AcceptErrorLog,
    exposure_warning,
    open_files_warning,
)
from tests.live.daemon_process import DaemonProcess


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_warning(host):
    assert exposure_warning(host, []) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gpu-box.example"])
def test_beyond_loopback_without_keys_is_warned_of(host):
    said = exposure_warning(host, [])
    assert said and host in said and "no API keys" in said and "exposing-the-daemon" in said
    assert exposure_warning(host, [object()]) is None


def test_an_open_files_limit_below_the_connection_cap_is_warned_of():
    assert "open files limit is 1024" in open_files_warning(1024, 1024)
    assert "no --limit-concurrency" in open_files_warning(1024, None)
    assert open_files_warning(20000, 1024) is None and open_files_warning(None, 1024) is None


class _Loop:
    def __init__(self):
        self.passed = []

    def default_exception_handler(self, context):
        self.passed.append(context)


def test_accept_errors_are_logged_once_an_interval_with_their_count(caplog):
    # 1100 idle sockets: each accept of the backlog logged a traceback, 93 MB of log in 30 s
    now = [0.0]
    handler, loop = AcceptErrorLog(60.0, clock=lambda: now[0]), _Loop()
    error = {"message": ACCEPT_ERROR, "exception": OSError(24, "Too many open files")}
    caplog.set_level(logging.ERROR, logger="controlplane.daemon")
    for i in range(2048):
        now[0] = i * 0.01
        handler(loop, error)
    now[0] = 61.0
    handler(loop, error)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and not any(r.exc_info for r in caplog.records)
    assert "Too many open files (once)" in lines[0]
    assert "Too many open files (2048 times in the last 61 s)" in lines[1]
    handler(loop, {"message": "something else"})
    assert loop.passed == [{"message": "something else"}] and handler.total == 2049


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("no finite hard limit above 256")
    code = ("import resource; n = resource.RLIMIT_NOFILE; resource.setrlimit(n, (256, resource.getrlimit(n)[1]))\n"
            "from controlplane.live.daemon_exposure import raise_open_file_limit\n"
            "print(raise_open_file_limit(), resource.getrlimit(n)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(hard), str(hard)]


def test_the_daemon_caps_connections_times_out_slow_bodies_and_warns_when_exposed(tmp_path):
    daemon = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--cpu-threads", "1", "--host", "0.0.0.0",
                                      "--db", f"sqlite:///{tmp_path / 'd.db'}", "--limit-concurrency", "3",
                                      "--body-timeout", "1"])
    try:
        daemon.wait_ready()
        assert "listening on 0.0.0.0, beyond loopback, with no API keys" in daemon.log_path.read_text()
        # a body sent a byte at a time: 408 after --body-timeout, the connection closed
        slow = socket.create_connection(("127.0.0.1", daemon.port))
        slow.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{")
        t0, answer = time.monotonic(), b""
        slow.settimeout(0.5)
        while time.monotonic() - t0 < 10:
            try:
                slow.sendall(b" ")
                chunk = slow.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), answer
        assert time.monotonic() - t0 < 5
        slow.close()
        # connections with headers never finished count: beyond --limit-concurrency, a request gets 503 at once
        idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(3)]
        for s in idle:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        time.sleep(0.3)
        assert httpx.get(f"{daemon.base}/healthz", timeout=5).status_code == 503
        for s in idle:
            s.close()
        time.sleep(0.3)
        assert httpx.get(f"{daemon.base}/healthz", timeout=5).status_code == 200
    finally:
        daemon.close()
