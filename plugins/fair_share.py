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
        self._tenants_active = 0  # tenants with requests in the system (a waiting request's tenant is one)

    def _queue(self, w):
        # One tenant with requests in the system: the order is arrival order, which a queue without inversions
        # (`WaitingQueue`; as it is but for preemptions and re-routed requests) already has - not sorted again
        # for every batch (an overloaded replica's queue holds thousands).
        if len(w.waiting) < 2 or (self._tenants_active <= 1 and getattr(w.waiting, "inversions", 1) == 0):
            return w.waiting
        c = self.counters
        return sorted(w.waiting, key=lambda r: (c.get(r.tenant or "", 0.0), r.arrival_s))

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
                self._tenants_active += 1
            self._active[t] += 1
        elif kind is RequestFinished:
            r = event.request
            t = r.tenant or ""
            if self._active[t] > 0:
                self._active[t] -= 1
                if self._active[t] == 0:
                    self._tenants_active -= 1
            self.counters[t] = self.counters.get(t, 0.0) + self.settings.output_weight * r.output_tokens
