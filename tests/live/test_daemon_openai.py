"""The OpenAI response shapes (`controlplane.live.daemon_openai`)."""

from __future__ import annotations

import pytest

from controlplane.live.daemon_openai import chat_response, completion_response, usage
from controlplane.live.results import LiveResult


def _result(i: int, prompt_tokens: int, completion_tokens: int) -> LiveResult:
    return LiveResult(f"r{i}", "m", "completed", "x" * completion_tokens, "length", None, prompt_tokens,
                      completion_tokens)


@pytest.mark.parametrize("shape", [completion_response, chat_response])
def test_usage_counts_each_prompt_once_whatever_its_number_of_choices(shape):
    """OpenAI's usage: ``{"prompt": ["a", "bb"], "n": 2}`` is 1 + 2 prompt tokens, not 6; every
    choice's completion counts."""
    results = [_result(0, 1, 3), _result(1, 1, 4), _result(2, 2, 5), _result(3, 2, 6)]  # prompt by prompt, n=2
    assert shape("id", "m", results, n=2)["usage"] == {"prompt_tokens": 3, "completion_tokens": 18,
                                                       "total_tokens": 21}
    assert usage(results) == {"prompt_tokens": 6, "completion_tokens": 18, "total_tokens": 24}  # n=1: 4 prompts
    assert usage([_result(0, 19, 2)] * 3, n=3)["prompt_tokens"] == 19
