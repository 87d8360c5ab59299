"""A NUL character (``\\u0000``) in a request's ``user`` or ``model``, against a daemon recording into a real
PostgreSQL database: a 400 naming the field (`controlplane.live.request_guard`), as a lone surrogate gets.

It was a 200 (or the 404 of an unknown model) whose row PostgreSQL then refused ("text fields cannot contain
NUL"): the request was served but missing from the run, its row in a refused-rows file in the daemon's folder.
"""

from __future__ import annotations

import json

import pytest

from tests.live.daemon_process import posts_recorded_in, refused_then_served
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 - fixtures: a fresh PostgreSQL database

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("path", "body", "param"), [
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "user": "bob\u0000"}, "user"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "model": "tiny\u0000"}, "model"),
    (CHAT, {"messages": USER, "max_tokens": 2, "user": "\u0000"}, "user"),
    (CHAT, {"messages": USER, "max_tokens": 2, "model": "gpt\u0000-9"}, "model"),
])
def test_a_nul_in_a_stored_field_is_a_400_and_every_row_reaches_postgresql(pg_url, tmp_path, monkeypatch, path,  # noqa: F811
                                                                           body, param):
    from controlplane.testing import stored_rows

    monkeypatch.chdir(tmp_path)  # (where a refused-rows file went)
    (refused, served), run_id = posts_recorded_in(pg_url, tmp_path, path, body,
                                                  {**body, param: "tiny" if param == "model" else "bob"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid") and "NUL character" in error["message"]
    assert "x-request-id" not in refused.headers  # refused before it became a request, as a lone surrogate is
    assert refused.content == json.dumps(refused.json(), ensure_ascii=False, separators=(",", ":")).encode()
    assert served.status_code == 200, served.text
    rows = stored_rows(pg_url, run_id, "requests")
    assert [r["request_id"] for r in rows] == [served.headers["x-request-id"]]
    assert not list(tmp_path.rglob("*refused*"))


@pytest.mark.parametrize("field", ["tenant", "request_id", "model"])
def test_the_library_refuses_a_nul_in_a_stored_field_before_anything_is_recorded(pg_url, tmp_path, monkeypatch,  # noqa: F811
                                                                                  field):
    """`LiveDriver.submit` (the library's door, which the HTTP guard does not cover) refused nothing: a tenant
    with a NUL was served and its row refused by PostgreSQL; an unknown model with one was recorded as rejected
    into the same refused row."""
    from controlplane.testing import stored_rows

    monkeypatch.chdir(tmp_path)
    error, served, run_id = refused_then_served(pg_url, {field: "a\u0000b"}, {})
    assert error.param == field and error.http_status == 400 and "NUL character" in str(error)
    assert served.ok
    assert [r["request_id"] for r in stored_rows(pg_url, run_id, "requests")] == ["served"]
    assert not list(tmp_path.rglob("*refused*"))
