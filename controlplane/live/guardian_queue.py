"""One live guardian's queue of checks, and the workers that take them: the simulator's rule, live.

A guardian's checks wait in one FIFO queue held by the driver (not in its workers' own command
queues); a worker that hosts the guardian takes the next one when it has none of its checks running
(of several free workers, the one that took the fewest so far): a worker runs one check of a
guardian at a time, and a check counts in its worker's ``inflight`` from when the worker takes it
until the worker answers. A check still unanswered after the guardian's ``timeout_s`` answers
``timeout``:

* one still queued leaves the queue: it never runs and costs nothing (its wait counts, its whole
  ``timeout_s``);
* one running runs to its end: its worker stays busy with it (``inflight`` 1, taking no other check
  of this guardian) and its time counts in ``busy_s`` when it ends; its verdict is dropped.

A queued check whose request left the system meanwhile (cancelled, failed: the core dropped its checks) leaves
the queue when a worker would take it: it never runs and answers `RequestLeft` (its wait counts until then),
as the simulator skips it. Before, such checks ran, used the worker (a judge's whole timeout) and answered a
request no longer there.

This is how the simulator treats a guardian's replicas (`sim.guardian_pool`: a queued check that
times out is skipped, a running batch runs to its end), so a guardian past its capacity queues, costs
and times out alike in both. (Before, live sent every check to a worker at once: checks that timed
out stayed queued on the worker and ran there one after the other, unseen by ``inflight``, the
replica choice and ``GET /admin/workers``, while the checks asked after them could only time out.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GuardianQueue", "Host", "NoHost", "QueuedCheck", "RequestLeft"]


class NoHost(Exception):
    """No worker hosts the guardian (none started, or the last one left): its checks answer ``error``."""


class RequestLeft(Exception):
    """The check's request left the system (cancelled, failed) before a worker took it: it never ran."""


@dataclass
class Host:
    """A worker that hosts a guardian: one of its own, or a generation worker (shared)."""

    worker_id: str
    inflight: int = 0  # 1 while it runs one of this guardian's checks (one that timed out included)
    checks: int = 0  # checks it took
    busy_s: float = 0.0  # its own time on this guardian's checks
    facts: dict[str, Any] | None = None  # what a worker of its own reported when it started


@dataclass(eq=False)
class QueuedCheck:
    text: str
    asked_s: float  # the event loop's clock
    answer: asyncio.Future = field(repr=False)  # the worker's GuardianVerdict, or why it has none
    host: Host | None = None  # the worker that took it (None: still queued)
    abandoned: bool = False  # its asker stopped waiting (timeout): its verdict, when it comes, is dropped
    left: Callable[[], str | None] | None = None  # how its request left the system (None: it is still there)


class GuardianQueue:
    """The FIFO queue of one guardian's checks and its waiting time (``wait_s`` over ``queued``)."""

    def __init__(self) -> None:
        self.checks: deque[QueuedCheck] = deque()
        self.queued = 0  # checks that entered the queue
        self.wait_s = 0.0  # their time in it: until a worker took them, or until their timeout

    def __len__(self) -> int:
        return len(self.checks)

    def add(self, text: str, left: Callable[[], str | None] | None = None) -> QueuedCheck:
        loop = asyncio.get_running_loop()
        check = QueuedCheck(text, loop.time(), loop.create_future(), left=left)
        self.checks.append(check)
        self.queued += 1
        return check

    def next_for(self, hosts: dict[str, Host]) -> tuple[QueuedCheck, Host] | None:
        """The next queued check and the free worker that takes it (marked busy), or None. The checks ahead of
        it whose request left leave the queue, never run (`RequestLeft`)."""
        if not self.checks:
            return None
        free = [h for h in hosts.values() if h.inflight == 0]
        if not free:
            return None
        now = asyncio.get_running_loop().time()
        while self.checks:
            check = self.checks.popleft()
            self.wait_s += now - check.asked_s
            how = check.left() if check.left is not None else None
            if how is None:
                break
            if not check.answer.done():
                check.answer.set_exception(RequestLeft(f"not run: its request left ({how}) before a worker took it"))
        else:
            return None
        host = min(free, key=lambda h: h.checks)  # turn about
        check.host = host
        host.inflight = 1
        host.checks += 1
        return check, host

    def give_up(self, check: QueuedCheck, waited_s: float) -> None:
        """Its asker stops waiting (a timeout after ``waited_s``, or a cancellation): a queued check
        leaves the queue, never to run (its wait counts until now); a running one runs on."""
        check.abandoned = True
        if check.host is None:
            self.checks.remove(check)
            self.wait_s += waited_s

    def fail_all(self, why: str) -> None:
        """No worker is left to take the queued checks: each answers ``error`` now (`NoHost`)."""
        now = asyncio.get_running_loop().time()
        while self.checks:
            check = self.checks.popleft()
            self.wait_s += now - check.asked_s
            if not check.answer.done():
                check.answer.set_exception(NoHost(why))

    @property
    def mean_wait_s(self) -> float | None:
        return round(self.wait_s / self.queued, 6) if self.queued else None
