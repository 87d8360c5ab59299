"""The OpenAI routes' own helpers, without a daemon."""

from __future__ import annotations

import asyncio
import gc

from controlplane.live.daemon_api import _results_unless_gone


class NeverAnswered:
    """A request handle whose result never comes."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def result(self) -> None:
        await asyncio.sleep(3600)

    def cancel(self, reason: str) -> None:
        self.cancelled.append(reason)


class GoneClient:
    async def is_disconnected(self) -> bool:
        return True


def test_a_client_gone_before_its_answer_cancels_its_requests_and_leaves_no_error_unretrieved():
    """asyncio logged ``_GatheringFuture exception was never retrieved ... CancelledError`` for
    each non-streamed request whose client went away."""
    handles = [NeverAnswered(), NeverAnswered()]

    async def main() -> tuple[object, list[dict]]:
        unhandled: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
        out = await _results_unless_gone(GoneClient(), handles)
        for _ in range(3):  # the cancelled waits end, then the gathering future is collected
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        return out, unhandled

    out, unhandled = asyncio.run(main())
    assert out is None and [h.cancelled for h in handles] == [["client disconnected"]] * 2
    assert unhandled == []
