"""A deployment's request preparation: a large text prompt is tokenized off the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from controlplane.live.http_errors import InvalidRequest
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.served_model import LARGE_PROMPT_CHARS, ServedModel


class _SlowTokenizer:
    """One id a character, 0.5 s a call (sleeping, as a fast tokenizer's Rust code runs without the GIL)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text, add_special_tokens=True):
        self.calls += 1
        time.sleep(0.5)
        return {"input_ids": [1] * len(text)}


def _served() -> ServedModel:
    return ServedModel("m", WorkerModelSettings(preset="tiny-llama"), _SlowTokenizer(), 512, 1000)


def test_a_large_prompt_is_tokenized_in_a_thread_while_the_loop_keeps_serving():
    """A 2 MiB prompt took seconds to tokenize on the event loop (every stream, request and probe
    stalled meanwhile); tokenized ahead, `prepare` on the loop refuses it at once from its ids."""
    served = _served()
    big = "ab " * (LARGE_PROMPT_CHARS // 2)

    async def main() -> float:
        gaps, last = [], time.monotonic()

        async def ticker() -> None:
            nonlocal last
            while True:
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        tick = asyncio.create_task(ticker())
        assert await served.tokenize_ahead(big, chat=False)
        tick.cancel()
        t0 = time.monotonic()
        with pytest.raises(InvalidRequest, match="too long"):
            served.prepare(big, max_tokens=2)
        assert time.monotonic() - t0 < 0.25  # its ids were there: not tokenized again on the loop
        return max(gaps)

    assert asyncio.run(main()) < 0.25
    assert served.tokenizer.calls == 1
    served.forget_ahead(big)
    assert not served._ahead  # nothing kept once the request is submitted


def test_small_prompts_and_token_ids_are_tokenized_in_place_and_shared_prompts_are_counted():
    served = _served()
    assert not asyncio.run(served.tokenize_ahead("hi")) and not asyncio.run(served.tokenize_ahead([1] * 10**5))
    big = "x" * (LARGE_PROMPT_CHARS + 1)

    async def twice() -> None:  # two requests in flight with the same prompt: kept until both are submitted
        await asyncio.gather(served.tokenize_ahead(big, chat=True), served.tokenize_ahead(big, chat=True))

    asyncio.run(twice())
    served.forget_ahead(big, chat=True)
    assert served.encode(big, special_tokens=False) == [1] * len(big) and served.tokenizer.calls <= 2
    served.forget_ahead(big, chat=True)
    assert not served._ahead
