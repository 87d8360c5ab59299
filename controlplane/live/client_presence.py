"""Whether an HTTP client is still waiting for its answer, learned the moment it leaves.

A handler waiting for a request's result listens for the connection's ``http.disconnect`` (the ASGI
server sends it as soon as the connection closes), so a client that gives up is cancelled at once
and the core records the request with ``client_gone`` (cancelled, or completed if it finished in the
iteration its client left). Polling instead (every 0.25 s) let a reply produced in between be
recorded and counted as a completed 200 that nobody read. Before a reply goes out, and before a held
stream's ``[DONE]``, `ClientPresence.gone` looks once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["ClientPresence"]

T = TypeVar("T")


class ClientPresence:
    """Watches one HTTP request's connection (a Starlette request: its ``receive`` and
    ``is_disconnected``) while the handler waits; `close` it before the response is returned."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self._left: asyncio.Future[None] = asyncio.ensure_future(self._until_disconnect())

    async def _until_disconnect(self) -> None:
        while (await self._request.receive()).get("type") != "http.disconnect":
            pass  # (the body was read already: nothing else comes but the disconnect)

    async def gone(self) -> bool:
        """Whether the client has left: its disconnect seen, or pending on the connection now."""
        if self._left.done() and not self._left.cancelled():
            self._left.exception()  # (a connection that failed while listening is gone as well)
            return True
        return await self._request.is_disconnected()

    async def unless_gone(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """``(True, result of work)``, or ``(False, None)`` when the client leaves first (``work`` is
        then cancelled, its cancellation taken here). A result ready as the client is found gone counts
        as gone: nobody would read it."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._left}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not await self.gone():
            return True, task.result()
        task.cancel()
        await asyncio.wait({task})  # its end is the cancellation: taken here, not logged as lost
        if not task.cancelled():
            task.exception()
        return False, None

    def close(self) -> None:
        """Stop listening (the response is about to go out, and Starlette listens on its own)."""
        self._left.cancel()
        if self._left.done() and not self._left.cancelled():
            self._left.exception()
