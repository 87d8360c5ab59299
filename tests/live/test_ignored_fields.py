"""Request fields the daemon accepts but ignores: a warning once per name (with the known field a
misspelt one looks like) and the ``x-ignored-fields`` header on the answer, success or error."""

from __future__ import annotations

import logging

import pytest

from controlplane.live.daemon import Daemon, DaemonOptions
from controlplane.live.daemon_config import daemon_config
from controlplane.live.daemon_requests import ChatCompletionRequest, CompletionRequest
from controlplane.live.ignored_fields import HEADER, MAX_LOGGED_PER_REQUEST, IgnoredFields, ignored_fields
from tests.live.daemon_process import wait_until_ready


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "controlplane.daemon" and r.levelno == logging.WARNING]


def test_unknown_fields_are_listed_and_known_ones_are_not():
    body = CompletionRequest.model_validate({"prompt": "x", "max_token": 5, "store": True, "user": "u",
                                             "stream_options": {"include_usage": True, "chunk": 1}})
    assert ignored_fields(body) == ["max_token", "store", "stream_options"]  # not streamed: all of it is unused
    assert ignored_fields(CompletionRequest.model_validate({"prompt": "x", "max_tokens": 5})) == []
    streamed = {"prompt": "x", "stream_options": {"include_usage": True, "chunk": 1}}
    assert ignored_fields(CompletionRequest.model_validate({**streamed, "stream": True})) == ["stream_options.chunk"]
    chat = ChatCompletionRequest.model_validate({"messages": [{"role": "assistant", "content": "a", "refusal": None}]})
    assert ignored_fields(chat) == []  # a message's own extras (echoed back from an answer) are not reported


def test_each_name_is_warned_about_once_with_a_hint_for_a_misspelt_field(caplog):
    caplog.set_level(logging.WARNING, logger="controlplane.daemon")
    seen = IgnoredFields()
    body = CompletionRequest.model_validate({"prompt": "x", "max_token": 5, "metadata": {"a": "b"}})
    assert seen.note(body, "/v1/completions") == "max_token,metadata"
    assert seen.note(body, "/v1/completions") == "max_token,metadata"  # the header every time
    assert warnings(caplog) == [
        "/v1/completions: ignoring the unknown request field 'max_token' (did you mean 'max_tokens'?); responses "
        "name it in x-ignored-fields (logged once per field name)",
        "/v1/completions: ignoring the unknown request field 'metadata'; responses name it in x-ignored-fields "
        "(logged once per field name)",
    ]
    chat = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "temprature": 1})
    assert seen.note(chat, "/v1/chat/completions") == "temprature"
    assert "(did you mean 'temperature'?)" in warnings(caplog)[-1]
    assert seen.note(CompletionRequest.model_validate({"prompt": "x"}), "/v1/completions") is None
    unstreamed = CompletionRequest.model_validate({"prompt": "x", "stream_options": {"include_usage": True}})
    assert seen.note(unstreamed, "/v1/completions") == "stream_options"
    assert warnings(caplog)[-1] == ("/v1/completions: ignoring the request field 'stream_options' (used only with "
                                    "stream: true); responses name it in x-ignored-fields (logged once per field name)")


def test_odd_names_are_escaped_and_the_header_and_the_warnings_are_bounded(caplog):
    caplog.set_level(logging.WARNING, logger="controlplane.daemon")
    seen = IgnoredFields(max_remembered=5)
    odd = CompletionRequest.model_validate({"prompt": "x", "a,b\n": 1, "é": 2, "z" * 100: 3})
    assert seen.note(odd, "/v1/completions") == "a\\x2cb\\n,z" + "z" * 63 + "...,\\xe9"
    assert len(warnings(caplog)) == 3 and "'a\\x2cb\\n'" in warnings(caplog)[0]  # no line break in the log
    many = CompletionRequest.model_validate({"prompt": "x", **{f"f{i:02d}": i for i in range(40)}})
    header = seen.note(many, "/v1/completions")
    assert header.split(",")[:2] == ["f00", "f01"] and header.endswith(",f31,...")
    assert len(warnings(caplog)) == 3 + 2 + 1  # two more names, then one warning that no more are warned about
    assert warnings(caplog)[-1] == "5 ignored field names seen: no warning for new ones (x-ignored-fields still names them)"
    assert seen.note(CompletionRequest.model_validate({"prompt": "x", "later": 1}), "/v1/completions") == "later"
    assert len(warnings(caplog)) == 6 and len(seen._seen) == 5


def test_one_request_of_made_up_names_logs_a_few_and_leaves_the_budget_for_a_later_typo(caplog):
    """10,000 unknown names in one body were 10,000 warning lines and used up the daemon's budget of names:
    a later client's ``tempreature`` was never logged."""
    caplog.set_level(logging.WARNING, logger="controlplane.daemon")
    seen = IgnoredFields()
    flood = CompletionRequest.model_validate({"prompt": "x", **{f"junk{i:05d}": i for i in range(10_000)}})
    assert seen.note(flood, "/v1/completions").endswith(",junk00031,...")  # the header as before
    assert len(warnings(caplog)) == MAX_LOGGED_PER_REQUEST + 1
    assert warnings(caplog)[-1] == (f"/v1/completions: {10_000 - MAX_LOGGED_PER_REQUEST} more ignored field names "
                                    f"in this request not logged (at most {MAX_LOGGED_PER_REQUEST} a request); "
                                    "x-ignored-fields names the first 32")
    typo = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "tempreature": 1})
    assert seen.note(typo, "/v1/chat/completions") == "tempreature"
    assert "'tempreature' (did you mean 'temperature'?)" in warnings(caplog)[-1]
    again = CompletionRequest.model_validate({"prompt": "x", "junk09999": 1})  # one not logged the first time: now
    seen.note(again, "/v1/completions")
    assert "'junk09999'" in warnings(caplog)[-1] and len(warnings(caplog)) == MAX_LOGGED_PER_REQUEST + 3
    assert seen.note(flood, "/v1/completions") and len(warnings(caplog)) == 2 * MAX_LOGGED_PER_REQUEST + 4


@pytest.fixture(scope="module")
def http():
    from fastapi.testclient import TestClient

    cfg, _ = daemon_config(None, workers=1)
    daemon = Daemon(cfg, DaemonOptions(pool="thread", cpu_threads=1), record=False)
    with TestClient(daemon.app) as client:
        wait_until_ready(client)
        yield client


def test_the_daemon_answers_with_the_ignored_fields_named(http, caplog):
    caplog.set_level(logging.WARNING, logger="controlplane.daemon")
    ok = http.post("/v1/completions", json={"prompt": "hi", "max_token": 3, "service_tier": "auto"})
    assert ok.status_code == 200 and ok.headers[HEADER] == "max_token,service_tier"
    assert ok.json()["usage"]["completion_tokens"] <= 16  # the default max_tokens: the misspelt one is not used
    assert any("'max_token' (did you mean 'max_tokens'?)" in w for w in warnings(caplog))
    chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                   "stream": True, "stream_options": {"include_usage": True,
                                                                                      "continuous_usage": True}})
    assert chat.status_code == 200 and chat.headers[HEADER] == "stream_options.continuous_usage"
    bad = http.post("/v1/completions", json={"prompt": "hi", "echo": True, "max_tokns": 2})
    assert bad.status_code == 400 and bad.headers[HEADER] == "max_tokns"  # an error says it too
    clean = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "user": "me"})
    assert clean.status_code == 200 and HEADER not in clean.headers
    # a body refused before it became a request, and an unknown model's 404: named as well (they were not)
    invalid = http.post("/v1/completions", json={"prompt": "hi", "max_token": 5, "temperature": 9})
    assert invalid.status_code == 400 and invalid.headers[HEADER] == "max_token"
    unknown = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                      "max_token": 5, "model": "nope"})
    assert unknown.status_code == 404 and unknown.headers[HEADER] == "max_token"


def test_a_nested_unknown_field_is_hinted_at_its_siblings_never_its_parent(caplog):
    caplog.set_level(logging.WARNING, logger="controlplane.daemon")
    seen = IgnoredFields()
    chunk = CompletionRequest.model_validate({"prompt": "x", "stream": True, "stream_options": {"chunk": 1}})
    assert seen.note(chunk, "/v1/completions") == "stream_options.chunk"
    assert warnings(caplog)[-1] == ("/v1/completions: ignoring the unknown request field 'stream_options.chunk'; "
                                    "responses name it in x-ignored-fields (logged once per field name)")
    typo = CompletionRequest.model_validate({"prompt": "x", "stream": True, "stream_options": {"include_usag": True}})
    assert seen.note(typo, "/v1/completions") == "stream_options.include_usag"
    assert "'stream_options.include_usag' (did you mean 'include_usage'?)" in warnings(caplog)[-1]
