"""Fair sharing across tenants: continuous batching that serves the least-served tenant first.

A Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models", OSDI'24):
every tenant has a counter of the service it got, ``prompt_weight`` per prompt token prefilled
plus ``output_weight`` per output token. A replica's waiting requests are served in order of
their tenant's counter (then age), so a tenant that sends a flood cannot starve the others.
A tenant that comes back after being idle is lifted to the smallest counter among the tenants
with requests in the system, so idling earns no credit to burst with later.

Counting: prompt tokens when their prefill is planned; output tokens when the request finishes
(a multi-iteration decode batch may stop early, so its token count is known only at the end).
Tenants are ``Request.tenant`` (``""`` when a request has none). Counters are cluster-wide.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from controlplane import hookimpl
from controlplane.events import RequestArrived, RequestFinished

from plugins.batching import ContinuousBatching


class FairShare(ContinuousBatching):
    """Continuous batching ordered by each tenant's virtual token counter (VTC)."""

    name = "fair-share"

    class Settings(ContinuousBatching.Settings):
        prompt_weight: float = Field(1.0, ge=0)
        output_weight: float = Field(2.0, ge=0)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.counters: dict[str, float] = {}
        self._active: Counter[str] = Counter()  # tenant -> requests in the system

    def _queue(self, w):
        """The waiting requests by their tenant's counter, then arrival: a queue in arrival order (`WaitingQueue`
        without inversions, as it is but for preemptions and re-routed requests) as it stands when one tenant waits
        in it, else read level by level (`_by_counter`); any other queue sorted."""
        q = w.waiting
        if len(q) < 2:
            return q
        if getattr(q, "inversions", 1) == 0 and hasattr(q, "tenants"):
            return q if len(q.tenants) <= 1 else self._by_counter(q)
        c = self.counters
        return sorted(q, key=lambda r: (c.get(r.tenant or "", 0.0), r.arrival_s))

    def _by_counter(self, q):
        """A queue in arrival order, in (counter, arrival) order, lazily: level by level of the counters of the tenants
        waiting in it, lowest first, each level's requests in queue order - a stable sort by the counter, which is
        the (counter, arrival) order of an in-order queue. A batch that is full, or fills after a few requests,
        reads a few: an overloaded replica plans a batch at every iteration. A level of one tenant is that tenant's
        requests as the queue keeps them (`WaitingQueue.tenants`, in queue order); a level of several (equal
        counters: a tenant lifted to another's, or none served yet) is read from the queue's head while it holds
        the head or at least half its even share of the queue, else from the tail until all its requests are
        found: the order is the same either way, only the reading differs."""
        c, n = self.counters, len(q)
        waiting = q.tenants
        levels: dict[float, list] = {}
        for t in waiting:
            levels.setdefault(c.get(t or "", 0.0), []).append(t)
        head_tenant = q[0].tenant
        for value in sorted(levels):
            inside = levels[value]
            if len(inside) == 1:
                yield from waiting[inside[0]]
                continue
            inside = set(inside)
            want = sum(len(waiting[t]) for t in inside)
            if head_tenant in inside or 2 * len(waiting) * want >= n:
                for r in q:
                    if r.tenant in inside:
                        yield r
                        want -= 1
                        if not want:
                            break
            else:
                found = []
                for r in reversed(q):
                    if r.tenant in inside:
                        found.append(r)
                        if len(found) == want:
                            break
                yield from reversed(found)

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        plan = self._form(worker)
        pw = self.settings.prompt_weight
        for r, n in plan.prefill:
            t = r.tenant or ""
            self.counters[t] = self.counters.get(t, 0.0) + pw * n
        return plan

    @hookimpl
    def cp_on_event(self, ctx, event):
        kind = type(event)
        if kind is RequestArrived:
            t = event.request.tenant or ""
            if self._active[t] == 0:
                busy = [self.counters.get(o, 0.0) for o, n in self._active.items() if n > 0]
                if busy:
                    self.counters[t] = max(self.counters.get(t, 0.0), min(busy))
            self._active[t] += 1
        elif kind is RequestFinished:
            r = event.request
            t = r.tenant or ""
            if self._active[t] > 0:
                self._active[t] -= 1
            self.counters[t] = self.counters.get(t, 0.0) + self.settings.output_weight * r.output_tokens
