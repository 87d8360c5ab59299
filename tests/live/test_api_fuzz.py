"""Property-based fuzzing of the daemon's HTTP API (issue 18): whatever the body (arbitrary JSON,
wrong types, huge numbers, NaN/Infinity, lone surrogates, bytes that are not JSON), the answer is
never a 5xx, every error has OpenAI's shape, no worker fails, and a well-formed request is still
served afterwards. Against a real tiny-llama worker in a thread (valid bodies really generate,
so what could be a valid ``max_tokens`` is kept small)."""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATHS = ("/v1/completions", "/v1/chat/completions")
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.text(st.characters() | SURROGATES, max_size=12)
NUMBERS = (st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0, -1, 1, 2, 2**63, 1e308, -0.0]))
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)

FIELDS = ["model", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed", "user",
          "presence_penalty", "frequency_penalty", "logit_bias", "top_k", "ignore_eos", "priority", "echo",
          "logprobs", "suffix", "best_of", "response_format", "tools", "max_completion_tokens"]
SMALL_TOKENS = st.integers(min_value=-3, max_value=3) | SCALARS
PROMPT = (TEXT | st.lists(TEXT, max_size=3) | st.lists(st.integers(-2, 600), max_size=6)
          | st.lists(st.lists(st.integers(-2, 600), max_size=4), max_size=3) | JSON)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio", 5]), "text": TEXT})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "", 3])},
    optional={"content": TEXT | st.none() | st.lists(PART | JSON, max_size=3) | JSON, "name": TEXT,
              "tool_calls": JSON})
SHAPED = st.fixed_dictionaries(
    {},
    optional={"prompt": PROMPT, "messages": st.lists(MESSAGE, max_size=4) | JSON, "max_tokens": SMALL_TOKENS,
              **{f: st.sampled_from([1, 0.5, 16, -1, "x", None, True, [], {}]) | JSON for f in FIELDS[:8]},
              **{f: JSON for f in FIELDS[8:]}},
)


VALID = {
    "/v1/completions": {"prompt": "fuzz me", "max_tokens": 2, "model": "tiny-llama"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "fuzz me"}], "max_tokens": 2},
}
ONE_FIELD = st.sampled_from([*FIELDS, "prompt", "messages", "max_tokens"])
ONE_VALUE = SCALARS | JSON | PROMPT | st.lists(MESSAGE, max_size=3)


def problems(client, daemon, path: str, **kwargs) -> list[str]:
    """What is wrong with the daemon's answer to this body: empty when it was served, or refused
    with a 4xx in OpenAI's error shape and no worker failed."""
    r = client.post(path, **kwargs)
    found = []
    if r.status_code >= 500:
        found.append(f"{r.status_code}: {r.text[:300]}")
    elif r.status_code != 200:
        if not r.headers["content-type"].startswith("application/json"):
            found.append(f"not JSON: {r.text[:300]}")
        else:
            err = r.json().get("error")
            if not isinstance(err, dict) or set(err) != {"message", "type", "param", "code"} \
                    or not isinstance(err["message"], str):
                found.append(f"not the OpenAI error shape: {r.text[:300]}")
    if daemon.driver._failed_workers:
        found.append(f"workers failed: {sorted(daemon.driver._failed_workers)}")
    return found


def with_small_budget(body):
    """Bodies that could be valid generate for real: keep their budget small."""
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens", "n"):
            if isinstance(body.get(key), int) and body[key] > 3:
                body[key] = 3
    return body


@FUZZ
@given(path=st.sampled_from(PATHS), body=JSON)
def test_arbitrary_json_is_never_a_5xx(api, path, body):
    client, daemon, _ = api
    raw = json.dumps(with_small_budget(body))  # NaN/Infinity as JS literals, surrogates as \\u escapes
    assert not problems(client, daemon, path, content=raw, headers={"content-type": "application/json"})


@FUZZ
@given(path=st.sampled_from(PATHS), body=SHAPED)
def test_schema_shaped_bodies_are_never_a_5xx(api, path, body):
    client, daemon, _ = api
    assert not problems(client, daemon, path, content=json.dumps(with_small_budget(body)),
                           headers={"content-type": "application/json"})


@FUZZ
@given(path=st.sampled_from(PATHS), field=ONE_FIELD, value=ONE_VALUE)
def test_one_hostile_field_in_a_valid_body_is_never_a_5xx(api, path, field, value):
    client, daemon, _ = api
    body = with_small_budget({**VALID[path], field: value})
    assert not problems(client, daemon, path, content=json.dumps(body), headers={"content-type": "application/json"})


@FUZZ
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=64))
def test_arbitrary_bytes_are_never_a_5xx(api, path, raw):
    client, daemon, _ = api
    assert not problems(client, daemon, path, content=raw)


def test_the_daemon_still_serves_after_the_fuzzing(api):
    client, daemon, _ = api
    r = client.post("/v1/completions", json={"prompt": "after the storm", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("length", "stop")
    assert all(w.is_alive for w in daemon.driver.core.workers.values())


@settings(max_examples=300, deadline=None, database=None)
@given(raw=st.binary(max_size=200) | JSON.map(lambda b: json.dumps(b).encode()))
def test_the_body_guard_only_ever_refuses_with_a_reason(raw):
    from controlplane.live.request_guard import BodyProblem, check_body

    try:
        body = check_body(raw)
    except BodyProblem as exc:
        assert exc.status in (400, 413) and str(exc)
        return
    # what passes is plain, finite, valid JSON that round-trips
    assert json.loads(json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")) == body
