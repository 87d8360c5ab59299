"""A request without max_tokens takes its endpoint's default, at most what the model's context
leaves after the prompt (`controlplane.live.daemon_api`): 16 for completions, as in OpenAI, and
the daemon's ``default_max_tokens`` for chat (4 in the ``api`` fixture)."""

from __future__ import annotations

from controlplane.live.daemon_api import COMPLETIONS_DEFAULT_MAX_TOKENS


def _context(daemon) -> int:
    return next(iter(daemon.driver.models.values())).max_seq_len


def test_a_completion_without_max_tokens_takes_16(api):
    client, _, _ = api
    r = client.post("/v1/completions", json={"prompt": "hello", "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == COMPLETIONS_DEFAULT_MAX_TOKENS == 16


def test_a_completion_without_max_tokens_fits_what_the_context_leaves(api):
    """The tester's ``"x" * 2040`` on a 2048-token model: 400 too_long for the default 16 it could
    not hold; now the room left (the prompt counted as the model encodes it)."""
    client, daemon, _ = api
    context = _context(daemon)
    text = "x" * (context - 8)  # one token a byte
    r = client.post("/v1/completions", json={"prompt": text, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert context - 8 <= usage["prompt_tokens"] <= context - 7  # (a BOS token where the model adds one)
    assert usage["completion_tokens"] == context - usage["prompt_tokens"] < 16
    ids = client.post("/v1/completions", json={"prompt": [5] * (context - 2), "temperature": 0, "ignore_eos": True})
    assert ids.status_code == 200 and ids.json()["usage"]["completion_tokens"] == 2, ids.text
    # a max_tokens the client gives is its own: too long is still too long
    over = client.post("/v1/completions", json={"prompt": text, "max_tokens": 16})
    assert over.status_code == 400 and over.json()["error"]["code"] == "too_long"


def test_a_chat_without_max_tokens_takes_the_daemons_default(api):
    client, _, _ = api
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                  "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text
