"""An integer stored in a request's row (``max_tokens`` as ``max_output_tokens``, ``priority``: INTEGER columns)
outside the 32-bit range, against a real PostgreSQL database: a 400 naming the field before anything is recorded.

``max_tokens`` 10**12 was a ``too_long`` rejection whose row PostgreSQL refused ("integer out of range"): any
client could make requests disappear from a run (SQLite stored it). `LiveDriver.submit` let a library caller's
``max_tokens`` or ``priority`` through the same way.
"""

from __future__ import annotations

import pytest

from controlplane.live.http_errors import INT32_MAX
from tests.live.daemon_process import posts_recorded_in, refused_then_served
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 - fixtures: a fresh PostgreSQL database

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("path", "body", "param"), [
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 10**12}, "max_tokens"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": INT32_MAX + 1, "model": "nope"}, "max_tokens"),
    (CHAT, {"messages": USER, "max_tokens": 10**12}, "max_tokens"),
    (CHAT, {"messages": USER, "max_completion_tokens": INT32_MAX + 1}, "max_completion_tokens"),
])
def test_an_integer_over_32_bits_is_a_400_and_every_row_reaches_postgresql(pg_url, tmp_path, monkeypatch, path,  # noqa: F811
                                                                            body, param):
    from controlplane.testing import stored_rows

    monkeypatch.chdir(tmp_path)  # (where a refused-rows file went)
    # the second: the largest stored, too long, recorded
    (refused, too_long), run_id = posts_recorded_in(pg_url, tmp_path, path, body, {**body, param: INT32_MAX})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid") and str(INT32_MAX) in error["message"]
    assert "x-request-id" not in refused.headers  # a protocol error: no request, no row
    assert too_long.status_code == (404 if body.get("model") == "nope" else 400), too_long.text
    rows = stored_rows(pg_url, run_id, "requests")
    assert [(r["request_id"], r["status"], r["max_output_tokens"]) for r in rows] == [
        (too_long.headers["x-request-id"], "rejected", INT32_MAX)]
    assert not list(tmp_path.rglob("*refused*"))


@pytest.mark.parametrize(("field", "value", "model"), [
    ("max_tokens", 10**12, None), ("max_tokens", INT32_MAX + 1, "nope"), ("priority", 2**31, None),
    ("priority", -(2**31) - 1, None),
])
def test_the_library_refuses_an_integer_over_32_bits_before_anything_is_recorded(pg_url, tmp_path, monkeypatch,  # noqa: F811
                                                                                  field, value, model):
    from controlplane.testing import stored_rows

    monkeypatch.chdir(tmp_path)
    error, served, run_id = refused_then_served(pg_url, {"model": model, field: value}, {"priority": INT32_MAX})
    assert error.param == field and error.http_status == 400 and "out of range" in str(error)
    assert served.ok
    assert [r["request_id"] for r in stored_rows(pg_url, run_id, "requests")] == ["served"]
    assert not list(tmp_path.rglob("*refused*"))
