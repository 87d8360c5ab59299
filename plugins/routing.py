"""Routing: pick the replica for each request."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.decisions import RouteDecision
from controlplane.types import WorkerState

from plugins.routing_wait import ReadinessGate
from plugins.scorers import ReplicaStats


class LeastLoaded(Plugin):
    """Send each request to the replica with the fewest queued plus running requests.

    A starting replica (cold start under way) wins only when its expected wait, the rest of its
    cold start plus its queued work, is below every ready replica's (`plugins.routing_wait`).
    """

    name = "least-loaded"

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.stats = ReplicaStats()
        self.gate = ReadinessGate()

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        pool, waits = self.gate.pool(ctx, workers, self.stats)
        if waits is not None:
            starting = [i for i in pool if workers[i].state is WorkerState.STARTING]
            if starting:  # every ready replica (if any) is more backed up than these
                i = min(starting, key=lambda j: (waits[j], workers[j].load, j))
                w = workers[i]
                why = ("below every ready replica's" if len(starting) < len(pool) else "no replica ready")
                return RouteDecision(w.worker_id, f"starting replica: expected wait {waits[i]:.1f} s "
                                                  f"(ready in {self.gate.time_to_ready_s(ctx, w):.1f} s), {why}")
            workers = [workers[i] for i in pool]
        loads = [len(w.waiting) + len(w.running) for w in workers]  # Worker.load, without a call per replica
        least = min(loads)
        best = workers[loads.index(least)]  # ties: the first in cluster order
        return RouteDecision(best.worker_id, f"least loaded ({least} queued+running)")

    @hookimpl
    def cp_on_event(self, ctx, event):
        self.stats.observe(event)


class RoundRobin(Plugin):
    """Cycle through the replicas in order (Vidur's global scheduler)."""

    name = "round-robin"

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._next = 0

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        w = workers[self._next % len(workers)]
        self._next += 1
        return RouteDecision(w.worker_id, "round robin")
