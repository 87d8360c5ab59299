"""What a client of the live driver holds: a request's handle (its text stream and final result)
and the driver's record of the request behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controlplane.live.http_errors import http_status_for
from controlplane.live.sampling import SamplingParams, StopCondition
from controlplane.prefix_scope import prefix_scope, prefixes_shared_across_tenants
from controlplane.types import ReasonCode, Request

if TYPE_CHECKING:
    from controlplane.live.driver import LiveDriver
    from controlplane.live.served_model import PreparedPrompt

__all__ = ["LiveRequest", "LiveRequestHandle", "LiveResult"]


@dataclass
class LiveResult:
    """A request's final state, as its client sees it. Times are run seconds (the core's clock)."""

    request_id: str
    model: str
    status: str  # completed | blocked | rejected | failed | in_flight | timeout | cancelled
    text: str
    finish_reason: str | None  # OpenAI style: "stop" | "length" (completed requests)
    reason: str | None  # why it was rejected or failed; the worker's stop reason when completed
    prompt_tokens: int
    completion_tokens: int
    worker_id: str | None = None
    num_retries: int = 0
    num_preemptions: int = 0
    cache_hit: str | None = None
    guardian_verdict: str | None = None
    arrival_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    reason_code: ReasonCode | None = None  # why it was rejected or failed, as a code
    retry_after_s: float | None = None  # a rejection: when the admission policy says a retry can succeed

    @property
    def ok(self) -> bool:
        """Answered: completed, or generated and withheld by a guardian (``finish_reason: "content_filter"``:
        an answer blocked, or a prompt an async check blocked after it generated, code ``blocked``)."""
        return self.status == "completed" or (self.status == "blocked" and self.finish_reason == "content_filter")

    @property
    def http_status(self) -> int:
        return 200 if self.ok else http_status_for(self.status, self.reason_code)


#: What a client still waiting when the daemon stops is told (503 ``unavailable``), and its row says.
CUT_OFF = "the daemon stopped before the request finished"


class _End:
    __slots__ = ("result",)

    def __init__(self, result: LiveResult) -> None:
        self.result = result


@dataclass(eq=False)
class LiveRequest:
    """The driver's side of one request: what the backend needs and what the client is owed."""

    request: Request
    prompt_ids: tuple[int, ...]
    max_tokens: int
    stop: StopCondition
    sampling: SamplingParams
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    registered_on: str | None = None  # the worker whose backend holds the request
    backend_done: bool = False  # the backend retired it (finished)
    hold: bool = False  # prefilled at its first chunk; the core has not scheduled the last one yet
    held: Any = None  # the token that prefill produced, delivered with the last chunk
    result: LiveResult | None = None
    timer: asyncio.TimerHandle | None = None
    withheld: bool = False  # a guardian blocked it while it generated: no more text goes to the client
    prefix_scope: str | None = None  # the tenant whose prompt prefixes its worker may reuse (None: shared)

    @classmethod
    def of(cls, request: Request, p: PreparedPrompt, max_tokens: int, plugin_settings: Any) -> LiveRequest:
        """The record of ``request`` (its prompt prepared as ``p``); its worker reuses the prompt prefixes of
        its tenant only, unless the run's ``plugins.settings`` share them across tenants."""
        scope = prefix_scope(request.tenant, prefixes_shared_across_tenants(plugin_settings))
        return cls(request, p.ids, max_tokens, p.stop, p.sampling, prefix_scope=scope)

    def push(self, delta: str) -> None:
        if self.result is None and not self.withheld:
            self.queue.put_nowait(delta)

    def resolve(self, result: LiveResult) -> None:
        if self.result is not None:
            return
        self.result = result
        if self.timer is not None:
            self.timer.cancel()
        self.queue.put_nowait(_End(result))

    def unregister(self) -> None:
        """The worker no longer holds the request's KV (preempted, failed, or removed)."""
        self.registered_on, self.hold, self.held = None, False, None

    def final(self, status: str, reason: str | None, code: ReasonCode | None = None) -> LiveResult:
        """The request's `LiveResult` in final state ``status``."""
        r = self.request
        text, completion = self.text, len(self.generated)
        if status == "blocked":  # the tokens the core counts (and stores), the last batch's included
            completion = max(completion, r.output_tokens)
        if r.cache_hit:  # a cached answer: its own tokens (a cache serves one cut at max_tokens only at that bound)
            text, completion = r.output_text or "", r.output_tokens
        finish = None
        if status == "completed":
            done = self.finish_reason == "length" or completion >= self.max_tokens
            finish = "length" if done else "stop"
        if status == "blocked" and (code is None or completion):  # withheld, OpenAI's way: a blocked answer,
            text, finish = "", "content_filter"  # or an async prompt block after it generated (its code stays)
        return LiveResult(
            request_id=r.request_id, model=r.model or "", status=status, text=text, finish_reason=finish,
            reason=reason, prompt_tokens=r.prompt_tokens, completion_tokens=completion, worker_id=r.worker_id,
            num_retries=r.num_retries, num_preemptions=r.num_preemptions, cache_hit=r.cache_hit,
            guardian_verdict=r.guardian_verdict, arrival_s=r.arrival_s, first_token_s=r.first_token_s,
            finish_s=r.finish_s, reason_code=code, retry_after_s=r.retry_after_s,
        )


class LiveRequestHandle:
    """A submitted request: ``async for delta in handle`` streams text; ``await handle.result()``;
    ``handle.cancel()`` when the client goes away."""

    def __init__(self, live: LiveRequest, driver: LiveDriver | None = None) -> None:
        self._live = live
        self._driver = driver
        self.request_id = live.request.request_id
        self._result: LiveResult | None = None

    def cancel(self, reason: str = "cancelled by the client") -> None:
        """Give up on the request: it leaves its worker at the next iteration, recorded as cancelled."""
        if self._driver is not None and not self.done:
            self._driver.cancel(self.request_id, reason)

    @property
    def done(self) -> bool:
        return self._live.result is not None

    @property
    def arrival_s(self) -> float:
        """When the control plane received the request, on the run's clock."""
        return self._live.request.arrival_s

    async def __aiter__(self) -> AsyncIterator[str]:
        while self._result is None:
            item = await self._live.queue.get()
            if isinstance(item, _End):
                self._result = item.result
                return
            yield item

    async def result(self) -> LiveResult:
        """Wait for the final state (deltas not yet read are part of its ``text``)."""
        async for _ in self:
            pass
        assert self._result is not None
        return self._result


def cut_off(requests: Iterable[LiveRequest]) -> None:
    """The run ends with these requests still in the core, which stores them ``in_flight``: each row says why as
    its client is told (`CUT_OFF`, or the reason it was answered with, code ``unavailable``:
    `LiveDriver.answer_pending`), unless a cause is recorded already (a timeout: its client had a 504)."""
    for live in requests:
        told, r = live.result, live.request
        if r.reason_code is None:
            r.reason = told.reason if told is not None and told.status == "in_flight" and told.reason else CUT_OFF
            r.reason_code = ReasonCode.UNAVAILABLE
