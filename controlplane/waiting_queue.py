"""A replica's waiting requests with the tokens they ask for kept as a running total.

Routing by tokens (`least-loaded` with ``by: tokens``, the bundled config's) reads every candidate
replica's assigned tokens at each arrival. Summed afresh, that walks each replica's queue, which an
overloaded replica grows to tens of thousands of requests: a 3-hour replay of an autoscaler that never
scaled spent 407 of its 500 s there (docs/history/simulator.md). `WaitingQueue` is the deque
`Worker.waiting` always was, with ``tokens`` kept by every method that adds or removes a request, so
the sum is read in O(1). Moving a request between ``waiting`` and ``running`` goes through these
methods like any other change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["WaitingQueue", "request_tokens"]


def request_tokens(r: Any) -> int:
    """Prompt plus expected output tokens: what a request asks of a replica, without its progress."""
    return r.prompt_tokens + r.max_output_tokens


class WaitingQueue(deque):
    """A deque of requests whose ``tokens`` is the sum of `request_tokens` over them.

    A request's ``prompt_tokens`` and ``max_output_tokens`` must not change while it is queued (the
    core sets them before routing and never after). No ``maxlen``: a bounded deque drops requests
    silently, and a queue never does.
    """

    __slots__ = ("tokens",)

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        super().__init__(iterable)
        self.tokens = sum(map(request_tokens, self))

    def __reduce__(self):  # (a copy or a pickle is made from the requests: ``tokens`` is recounted)
        return type(self), (list(self),)

    def append(self, r: Any) -> None:
        super().append(r)
        self.tokens += r.prompt_tokens + r.max_output_tokens

    def appendleft(self, r: Any) -> None:
        super().appendleft(r)
        self.tokens += r.prompt_tokens + r.max_output_tokens

    def extend(self, items: Iterable[Any]) -> None:
        items = list(items)
        super().extend(items)
        self.tokens += sum(map(request_tokens, items))

    def extendleft(self, items: Iterable[Any]) -> None:
        items = list(items)
        super().extendleft(items)
        self.tokens += sum(map(request_tokens, items))

    def insert(self, i: int, r: Any) -> None:
        super().insert(i, r)
        self.tokens += r.prompt_tokens + r.max_output_tokens

    def pop(self) -> Any:
        r = super().pop()
        self.tokens -= r.prompt_tokens + r.max_output_tokens
        return r

    def popleft(self) -> Any:
        r = super().popleft()
        self.tokens -= r.prompt_tokens + r.max_output_tokens
        return r

    def remove(self, r: Any) -> None:
        super().remove(r)
        self.tokens -= r.prompt_tokens + r.max_output_tokens

    def clear(self) -> None:
        super().clear()
        self.tokens = 0

    def __delitem__(self, i: int) -> None:
        r = self[i]
        super().__delitem__(i)
        self.tokens -= r.prompt_tokens + r.max_output_tokens

    def __setitem__(self, i: int, r: Any) -> None:
        old = self[i]
        super().__setitem__(i, r)
        self.tokens += request_tokens(r) - request_tokens(old)

    def __iadd__(self, items: Iterable[Any]) -> WaitingQueue:
        self.extend(items)
        return self

    def __imul__(self, n: int) -> WaitingQueue:
        super().__imul__(n)
        self.tokens = sum(map(request_tokens, self))
        return self

    def copy(self) -> WaitingQueue:
        return WaitingQueue(self)
