"""``null`` for a field OpenAI types as nullable is the field's default: the ``openai`` client sends
``"n": null``, ``"stream": null``... when a caller passes None, and those were a 400 ("Input should be a
valid integer") while ``"temperature": null`` or ``"seed": null`` were taken (`controlplane.live.daemon_requests`)."""

from __future__ import annotations

import pytest

from controlplane.live.daemon_requests import ChatCompletionRequest, CompletionRequest

NULLS = {"n": None, "stream": None, "ignore_eos": None, "priority": None}
USER = [{"role": "user", "content": "hi"}]


def test_null_is_the_default_of_each_nullable_field():
    completion = CompletionRequest.model_validate({"prompt": "hi", **NULLS, "echo": None})
    chat = ChatCompletionRequest.model_validate({"messages": USER, **NULLS})
    for body in (completion, chat):
        assert (body.n, body.stream, body.ignore_eos, body.priority) == (1, False, False, 0)
    assert completion.echo is False


@pytest.mark.parametrize("field", ["n", "stream", "ignore_eos", "priority"])
def test_a_wrong_type_is_still_refused(field):
    with pytest.raises(ValueError, match=field):
        CompletionRequest.model_validate({"prompt": "hi", field: "1"})


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, **NULLS, "echo": None}),
    ("/v1/chat/completions", {"messages": USER, "max_tokens": 2, **NULLS}),
])
def test_the_daemon_serves_a_body_of_nulls(api, path, body):
    client, _, _ = api
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 1 and r.headers["content-type"].startswith("application/json")
