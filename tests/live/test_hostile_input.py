"""Hostile input at the HTTP edge (issue 18): every bad request gets a 4xx in OpenAI's error
shape, none reaches a worker (the pool's steps are counted), and the daemon still answers
well-formed requests afterwards. Against a real tiny-llama worker in a thread."""

from __future__ import annotations

import json

import pytest

from controlplane.live.daemon_requests import LIMITS
from controlplane.live.request_guard import MAX_BODY_BYTES, MAX_JSON_DEPTH

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]

#: (path, raw body, the param the error must name or None for any)
RAW = [
    (COMPLETIONS, b'{"prompt": "hi", "temperature": NaN}', None),
    (COMPLETIONS, b'{"prompt": "hi", "top_p": Infinity}', None),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": -Infinity}', None),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": 1e999}', None),
    (COMPLETIONS, b'{"prompt": "\\ud800 lone surrogate", "max_tokens": 2}', "prompt"),
    (CHAT, b'{"messages": [{"role": "user", "content": "\\udfff"}]}', "messages[0].content"),
    (COMPLETIONS, b'{"prompt": "hi", "\\ud800": 1}', None),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 2', None),
    (COMPLETIONS, b"", None),
    (COMPLETIONS, b"\xff\xfe not utf-8", None),
    (COMPLETIONS, b"[1, 2, 3]", None),
    (COMPLETIONS, b'"just a string"', None),
    (COMPLETIONS, b"null", None),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 1' + b"0" * 5000 + b"}", None),
    (COMPLETIONS, b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
]

#: (path, JSON body, the param the error must name)
BODIES = [
    (COMPLETIONS, {"prompt": "hi", "temperature": 2.5}, "temperature"),
    (COMPLETIONS, {"prompt": "hi", "temperature": "hot"}, "temperature"),
    (COMPLETIONS, {"prompt": "hi", "top_p": 0}, "top_p"),
    (COMPLETIONS, {"prompt": "hi", "top_p": 1.5}, "top_p"),
    (COMPLETIONS, {"prompt": "hi", "presence_penalty": 3}, "presence_penalty"),
    (COMPLETIONS, {"prompt": "hi", "frequency_penalty": 0.5}, "frequency_penalty"),  # valid, unsupported
    (COMPLETIONS, {"prompt": "hi", "seed": 1.5}, "seed"),
    (COMPLETIONS, {"prompt": "hi", "seed": 2**64}, "seed"),
    (COMPLETIONS, {"prompt": "hi", "n": 0}, "n"),
    (COMPLETIONS, {"prompt": "hi", "n": 1000}, "n"),
    (COMPLETIONS, {"prompt": ["a"] * 8, "n": 16}, "n"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": -5}, "max_tokens"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": True}, "max_tokens"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 10**6}, "max_tokens"),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 10**12}, "max_tokens"),  # over 32 bits: no row could store it
    (COMPLETIONS, {"prompt": "hi", "logit_bias": {"5": 101}}, "logit_bias"),
    (COMPLETIONS, {"prompt": "hi", "logit_bias": {"x": 1}}, "logit_bias"),
    (COMPLETIONS, {"prompt": "hi", "logit_bias": {str(i): 1 for i in range(400)}}, "logit_bias"),
    (COMPLETIONS, {"prompt": "hi", "logit_bias": {"99999999": 1}}, "logit_bias"),
    (COMPLETIONS, {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (COMPLETIONS, {"prompt": "hi", "stop": ""}, "stop"),
    (COMPLETIONS, {"prompt": "hi", "stop": "x" * 1000}, "stop"),
    (COMPLETIONS, {"prompt": "hi", "stop": [1, 2]}, "stop"),
    (COMPLETIONS, {"prompt": [1.5, 2]}, "prompt"),
    (COMPLETIONS, {"prompt": [-1]}, "prompt"),
    (COMPLETIONS, {"prompt": [True]}, "prompt"),
    (COMPLETIONS, {"prompt": [10**9]}, "prompt"),
    (COMPLETIONS, {"prompt": ["a", 1]}, "prompt"),
    (COMPLETIONS, {"prompt": ["a"] * 100}, "prompt"),
    (COMPLETIONS, {"prompt": {"text": "hi"}}, "prompt"),
    (COMPLETIONS, {"prompt": []}, "prompt"),
    (COMPLETIONS, {"prompt": "hi", "stream": "yes"}, "stream"),
    (COMPLETIONS, {"prompt": "hi", "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    (COMPLETIONS, {"prompt": "hi", "model": 5}, "model"),
    (COMPLETIONS, {"prompt": "hi", "user": "u" * 1000}, "user"),
    (COMPLETIONS, {"prompt": "hi", "priority": 10**10}, "priority"),
    (COMPLETIONS, {"prompt": "hi", "best_of": 3}, "best_of"),
    (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": "tool", "content": "hi", "tool_call_id": "1"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"content": "hi"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": "user"}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "user", "content": ["hi"]}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]}, "messages.0"),
    (CHAT, {"messages": USER * (LIMITS["max_messages"] + 1)}, "messages"),
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {}, "messages"),
    (CHAT, {"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
    (CHAT, {"messages": USER, "tools": [{"type": "function"}]}, "tools"),
    (CHAT, {"messages": USER, "temperature": None, "top_p": -1}, "top_p"),
]


def check_error(r, status: int = 400, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    # one serialization for every error, whichever layer answered (the body guard or the app): compact, UTF-8
    assert r.content == json.dumps(r.json(), ensure_ascii=False, separators=(",", ":")).encode()
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str) and err["message"]
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(("path", "raw", "param"), RAW, ids=[f"raw{i}" for i in range(len(RAW))])
def test_malformed_bodies_are_400s_and_reach_no_worker(api, path, raw, param):
    client, _, steps = api
    before = steps.count
    err = check_error(client.post(path, content=raw, headers={"content-type": "application/json"}), param=param)
    assert err["code"] == "invalid"
    assert steps.count == before


@pytest.mark.parametrize(("path", "body", "param"), BODIES, ids=[f"body{i}" for i in range(len(BODIES))])
def test_invalid_fields_are_400s_naming_the_field_and_reach_no_worker(api, path, body, param):
    client, _, steps = api
    before = steps.count
    err = check_error(client.post(path, json=body), param=param)
    over_context = body.get("max_tokens") == 10**6  # more than the model's context: its length error
    assert err["code"] == ("too_long" if over_context else "invalid")
    assert steps.count == before


def test_one_bad_prompt_of_several_refuses_them_all_before_any_is_submitted(api):
    client, daemon, steps = api
    before, ids = steps.count, daemon.driver.core.ctx.ids.next("live-request")
    r = client.post(COMPLETIONS, json={"prompt": [[1, 2], [3] * 5000], "max_tokens": 2})
    assert check_error(r, param="prompt")["code"] == "too_long"
    # none submitted: one rejected request recorded for the whole HTTP request, as the core refuses it too
    assert r.headers["x-request-id"] == f"req-{ids + 1}"
    assert steps.count == before and daemon.driver.core.ctx.ids.next("live-request") == ids + 2


def test_limits_on_size_and_depth(api):
    client, _, steps = api
    before = steps.count
    big = json.dumps({"prompt": "x" * MAX_BODY_BYTES}).encode()
    check_error(client.post(COMPLETIONS, content=big), 413)
    deep = {"prompt": "hi", "metadata": 1}
    for _ in range(MAX_JSON_DEPTH + 1):
        deep["metadata"] = [deep["metadata"]]
    assert "nested too deeply" in check_error(client.post(COMPLETIONS, json=deep))["message"]
    assert steps.count == before


def test_other_http_errors_have_the_openai_shape(api):
    client, _, _ = api
    check_error(client.get("/v1/nowhere"), 404)
    r = client.get(COMPLETIONS)
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    check_error(client.post(COMPLETIONS, json={"prompt": "hi", "model": "gpt-4"}), 404, "model")


def test_well_formed_requests_are_served_between_hostile_ones(api):
    client, daemon, steps = api
    before = steps.count
    for path, body in ((COMPLETIONS, {"prompt": "hello", "max_tokens": 3, "temperature": 0.7, "seed": 3,
                                      "top_p": 0.9, "stop": ["\n\n"], "logit_bias": {}, "user": "me"}),
                       (COMPLETIONS, {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 2}),
                       (CHAT, {"messages": [{"role": "developer", "content": "be brief"},
                                            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                            {"role": "assistant", "content": None},
                                            {"role": "user", "content": "again"}], "max_tokens": 2})):
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
        client.post(path, content=b'{"prompt": "\\ud800", "temperature": NaN}')  # hostile, in between
    assert steps.count > before
    assert all(w.is_alive for w in daemon.driver.core.workers.values())
