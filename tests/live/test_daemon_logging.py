"""The daemon's log (`controlplane.live.daemon_logging`): one format for its lines and uvicorn's, an access
log that names each request's x-request-id whatever --log-level, and --log-format json."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.live.daemon_process import DaemonProcess

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def _requests(base: str) -> list[str]:
    """An answer, a refusal (unknown model) and a timeout: their x-request-ids."""
    ids = []
    for body, code in (({"prompt": "x", "max_tokens": 2}, 200), ({"model": "nope", "prompt": "x"}, 404),
                       ({"prompt": "x", "max_tokens": 1500, "ignore_eos": True}, 504)):
        r = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
        assert r.status_code == code, r.text[:300]
        ids.append(r.headers["x-request-id"])
    deadline = time.monotonic() + 30  # (the timed-out one is off its worker, recorded as cancelled)
    while 'status="cancelled"' not in httpx.get(f"{base}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return ids


@pytest.fixture()
def daemon(tmp_path, request):
    procs = []

    def start(*args: str) -> DaemonProcess:
        d = DaemonProcess(tmp_path, ["--pool", "thread", "--workers", "1", "--cpu-threads", "1",
                                     "--db", f"sqlite:///{tmp_path / f'{len(procs)}.db'}", *args],
                          name=f"daemon{len(procs)}")
        procs.append(d)
        d.wait_ready()
        return d

    yield start
    for d in procs:
        d.close()


def test_the_access_log_names_each_request_s_id_in_the_daemon_s_format_even_at_log_level_warning(daemon):
    """--access-log printed nothing at --log-level warning; at info its lines (uvicorn's) had no timestamp and no
    request id, and uvicorn's other lines another format; a timeout or a refusal had no line naming its request."""
    d = daemon("--access-log", "--log-level", "warning", "--request-timeout", "1")
    ok, refused, timed_out = _requests(d.base)
    assert d.stop() == 0
    lines = d.log_path.read_text().splitlines()
    logged = [line for line in lines if not line.startswith("controlplane daemon: ")]  # (the start banner)
    assert logged and all(TIMESTAMP.match(line) for line in logged), logged
    access = [line for line in logged if " INFO controlplane.access: " in line and "/v1/completions" in line]
    assert [re.search(r'"POST /v1/completions HTTP/1.1" (\d+) [\d.]+s x-request-id=(\S+)$', line).groups()
            for line in access] == [("200", ok), ("404", refused), ("504", timed_out)], access
    requests = [line.split(": ", 1)[1] for line in logged if " INFO controlplane.requests: " in line]
    assert f"request {refused} rejected (unknown_model): unknown model: no deployment serves 'nope' " \
           "(served: tiny-llama)" in requests, logged
    assert f"request {timed_out} cancelled (timeout): timed out: no answer within 1s" in requests, logged
    assert not [line for line in logged if " INFO uvicorn" in line]  # (--log-level warning)


def test_log_format_json_makes_every_line_one_object_uvicorn_s_too_and_no_request_lines_by_default(daemon):
    d = daemon("--log-format", "json", "--request-timeout", "1")
    ids = _requests(d.base)
    assert d.stop() == 0
    lines = [json.loads(line) for line in d.log_path.read_text().splitlines()]  # (each one JSON object)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    by = {(line["logger"], line["message"].split(" [")[0]) for line in lines}
    assert ("uvicorn.error", "Started server process") in by, by
    assert any(m.startswith("controlplane daemon: tiny-llama x1 on the thread pool") for _, m in by), by
    # without --access-log: no line per request (neither its HTTP line nor its end)
    assert not [line for line in lines if line["logger"] in ("controlplane.access", "controlplane.requests")]
    assert not [line for line in lines if any(i in line["message"] for i in ids)]
