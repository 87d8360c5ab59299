"""Routing: pick the replica for each request."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.decisions import RouteDecision


class LeastLoaded(Plugin):
    """Send each request to the replica with the fewest queued plus running requests."""

    name = "least-loaded"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        loads = [len(w.waiting) + len(w.running) for w in workers]  # Worker.load, without a call per replica
        least = min(loads)
        best = workers[loads.index(least)]  # ties: the first in cluster order
        return RouteDecision(best.worker_id, f"least loaded ({least} queued+running)")


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
