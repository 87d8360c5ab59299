"""A replica's waiting requests with what they ask for kept as running totals.

Policies read sums over a replica's queue at every arrival: routing by tokens (`least-loaded` with ``by: tokens``,
the bundled config's) its requests' prompt plus expected output tokens, the ``estimated-work`` scorer and the
cold-start wait (`plugins.scorers.work_tokens`) the tokens still to prefill and to generate, ``slo-admission`` the
tokens still to prefill, ``priority-classes`` how many of each priority wait, ``queue-limit``'s ``max_finish_s``
(`plugins.finish_time`) the tokens each is expected still to generate and still to prefill. Summed afresh, each
walks every candidate replica's queue, which an overloaded replica grows to tens of thousands of requests: a 3-hour
replay of an autoscaler that never scaled spent 407 of its 500 s there (docs/history/simulator.md). `WaitingQueue`
is the deque `Worker.waiting` always was, with these kept by every method that adds or removes a request, so each
sum is read without walking the queue:

- ``tokens``: prompt plus ``max_output_tokens`` (`request_tokens`);
- ``remaining_prefill_tokens``: prompt plus recomputed output less the tokens already computed (a prefix hit, or a
  preempted request's lost progress), as `Request.remaining_prefill_tokens`;
- ``remaining_output_tokens``: ``max_output_tokens`` less the tokens generated so far, as
  `Request.remaining_output_tokens`;
- ``priorities``: how many queued requests have each ``priority`` (only those with at least one);
- ``prefill_by_priority``: the ``remaining_prefill_tokens`` of each ``priority``'s queued requests (the same keys as
  ``priorities``), read by ``slo-admission`` under a batcher that serves by priority: a request waits only for the
  prefill queued at its priority or above;
- ``tenants``: each ``tenant``'s waiting requests in queue order (None for none; only tenants with at least one), a
  deque each, read by `fair-share`, which serves the least-served tenant's requests first without walking the
  others' (an index: appends, pops from either end and a removal near a tenant's oldest request cost O(1); an
  insertion into the middle of the queue or a reordering rebuilds it);
- ``lengths``: how many have each (``output_tokens``, ``max_output_tokens``) pair, the tokens generated so far and the
  most they may generate (only pairs with at least one): a sum over the queue of any function of the two (the
  tokens a request is expected still to generate, which follows the run's finished answers) costs the distinct
  pairs waiting, bounded by the workload's lengths rather than by the queue's;
- ``inversions``: how many neighbours are out of arrival order (a request after one that arrived later): 0 when
  the queue is in arrival order, as it is but for preemptions and re-routed requests, so a priority batcher that
  would sort the queue by (priority, arrival) for every batch knows when that sort would change nothing.

Each is exact only while none of those fields changes for a request in the queue, and ``tenants`` keeps queue order
only while a request is queued at most once (as the core does: a request waits in one place). The core keeps it so: a
request's lengths are set before routing and its priority at admission; a preemption drops a request's KV
(``recompute_tokens``, ``num_computed_tokens``) before it re-enters the queue; a drained or failed replica's queue
is emptied before its requests are routed again; and a batch takes a request out of the queue before the prefix
cache is asked how much of its prompt is computed (`controlplane.batch_scheduling`). Moving a request between
``waiting`` and ``running`` goes through these methods like any other change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["WaitingQueue", "request_tokens"]

_append, _popleft = deque.append, deque.popleft  # (the hot two: called without super())


def _count_out(counts: dict, key: Any) -> None:
    """One fewer of ``key`` in ``counts``, which keeps only keys with at least one."""
    n = counts[key] - 1
    if n:
        counts[key] = n
    else:
        del counts[key]


def request_tokens(r: Any) -> int:
    """Prompt plus expected output tokens: what a request asks of a replica, without its progress."""
    return r.prompt_tokens + r.max_output_tokens


class WaitingQueue(deque):
    """A deque of requests that keeps, over them: ``tokens`` (the sum of `request_tokens`),
    ``remaining_prefill_tokens``, ``remaining_output_tokens``, ``priorities`` (priority -> requests),
    ``prefill_by_priority`` (priority -> its requests' ``remaining_prefill_tokens``), ``tenants``
    (tenant -> its requests in queue order), ``lengths`` ((output_tokens, max_output_tokens) -> requests) and
    ``inversions``.

    A request's lengths, progress, priority and tenant must not change while it is queued, nor a request be queued
    twice (the module's docstring says how the core keeps that). No ``maxlen``: a bounded deque drops requests
    silently, and a queue never does.
    """

    __slots__ = ("tokens", "remaining_prefill_tokens", "remaining_output_tokens", "priorities", "prefill_by_priority",
                 "tenants", "lengths", "inversions")

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        super().__init__(iterable)
        self._recount()

    def _recount(self) -> None:
        self.tokens = self.remaining_prefill_tokens = self.remaining_output_tokens = 0
        self.priorities: dict[int, int] = {}
        self.prefill_by_priority: dict[int, int] = {}
        self.lengths: dict[tuple[int, int], int] = {}
        self._add(self)
        self._reindex()

    def _reindex(self) -> None:
        """``inversions`` and ``tenants`` afresh from the queue's order."""
        self.inversions = sum(b.arrival_s < a.arrival_s for a, b in zip(self, list(self)[1:]))
        self.tenants: dict[str | None, deque] = {}
        for r in self:
            self._tenant(r.tenant).append(r)

    def _tenant(self, tenant: str | None) -> deque:
        """``tenant``'s requests in queue order, an empty deque entered for it if it had none."""
        q = self.tenants.get(tenant)
        if q is None:
            q = self.tenants[tenant] = deque()
        return q

    def _reindex_tenant(self, tenant: str | None) -> None:
        """``tenant``'s requests found afresh in the queue (after one was put into its middle)."""
        self.tenants[tenant] = deque(r for r in self if r.tenant == tenant)

    def _tenant_out(self, r: Any, i: int) -> None:
        """Take ``r`` out of its tenant's requests, from the end it is at (``i`` 0 or -1) or else found there."""
        q = self.tenants[r.tenant]
        if len(q) == 1:
            del self.tenants[r.tenant]
        elif q[i] is r:
            q.popleft() if i == 0 else q.pop()
        else:
            del q[q.index(r)]

    def _out_of_order(self, i: int) -> int:
        """Whether the neighbours at ``i - 1`` and ``i`` are out of arrival order (0 or 1; 0 off either end)."""
        return 1 if 0 < i < len(self) and self[i].arrival_s < self[i - 1].arrival_s else 0

    def _add(self, items: Iterable[Any]) -> None:
        for r in items:
            self._add_one(r)

    def _add_one(self, r: Any) -> None:
        self.tokens += r.prompt_tokens + r.max_output_tokens
        prefill = r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens
        self.remaining_prefill_tokens += prefill
        self.remaining_output_tokens += r.max_output_tokens - r.output_tokens
        p, priority = self.priorities, r.priority
        p[priority] = p.get(priority, 0) + 1
        pp = self.prefill_by_priority
        pp[priority] = pp.get(priority, 0) + prefill
        lengths = self.lengths
        key = r.output_tokens, r.max_output_tokens
        lengths[key] = lengths.get(key, 0) + 1

    def _sub(self, r: Any) -> None:
        self.tokens -= r.prompt_tokens + r.max_output_tokens
        prefill = r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens
        self.remaining_prefill_tokens -= prefill
        self.remaining_output_tokens -= r.max_output_tokens - r.output_tokens
        p, priority = self.priorities, r.priority
        n = p[priority] - 1
        if n:
            p[priority] = n
            self.prefill_by_priority[priority] -= prefill
        else:
            del p[priority]
            del self.prefill_by_priority[priority]
        _count_out(self.lengths, (r.output_tokens, r.max_output_tokens))

    def __reduce__(self):  # (a copy or a pickle is made from the requests: the totals are recounted)
        return type(self), (list(self),)

    # The two methods the core calls for every request (append: routed; popleft: a batch takes it) call deque's own
    # methods directly, not through super().

    def append(self, r: Any) -> None:
        if self and r.arrival_s < self[-1].arrival_s:
            self.inversions += 1
        _append(self, r)
        self._add_one(r)
        self._tenant(r.tenant).append(r)

    def appendleft(self, r: Any) -> None:
        if self and self[0].arrival_s < r.arrival_s:
            self.inversions += 1
        super().appendleft(r)
        self._add_one(r)
        self._tenant(r.tenant).appendleft(r)

    def extend(self, items: Iterable[Any]) -> None:
        for r in list(items):
            self.append(r)

    def extendleft(self, items: Iterable[Any]) -> None:
        for r in list(items):
            self.appendleft(r)

    def insert(self, i: int, r: Any) -> None:
        i = max(0, min(len(self), i + len(self) if i < 0 else i))
        self.inversions -= self._out_of_order(i)
        super().insert(i, r)
        self.inversions += self._out_of_order(i) + self._out_of_order(i + 1)
        self._add_one(r)
        self._reindex_tenant(r.tenant)

    def pop(self) -> Any:
        r = super().pop()
        if self and r.arrival_s < self[-1].arrival_s:
            self.inversions -= 1
        self._sub(r)
        self._tenant_out(r, -1)
        return r

    def popleft(self) -> Any:
        r = _popleft(self)
        if self and self[0].arrival_s < r.arrival_s:
            self.inversions -= 1
        self._sub(r)
        self._tenant_out(r, 0)
        return r

    def remove(self, r: Any) -> None:
        del self[self.index(r)]

    def clear(self) -> None:
        super().clear()
        self._recount()

    def reverse(self) -> None:
        super().reverse()
        self._reindex()

    def rotate(self, n: int = 1) -> None:
        super().rotate(n)
        self._reindex()

    def __delitem__(self, i: int) -> None:
        i = i + len(self) if i < 0 else i
        r = self[i]
        self.inversions -= self._out_of_order(i) + self._out_of_order(i + 1)
        super().__delitem__(i)
        self.inversions += self._out_of_order(i)
        self._sub(r)
        self._tenant_out(r, 0)

    def __setitem__(self, i: int, r: Any) -> None:
        i = i + len(self) if i < 0 else i
        old = self[i]
        self.inversions -= self._out_of_order(i) + self._out_of_order(i + 1)
        super().__setitem__(i, r)
        self.inversions += self._out_of_order(i) + self._out_of_order(i + 1)
        self._sub(old)
        self._add_one(r)
        self._tenant_out(old, 0)
        self._reindex_tenant(r.tenant)

    def __iadd__(self, items: Iterable[Any]) -> WaitingQueue:
        self.extend(items)
        return self

    def __imul__(self, n: int) -> WaitingQueue:
        super().__imul__(n)
        self._recount()
        return self

    def copy(self) -> WaitingQueue:
        return WaitingQueue(self)
