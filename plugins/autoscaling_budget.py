"""The SLO's miss budget as the price of the SLO planner's hold (`MissBudget`): the share of requests the
SLO lets miss, less the misses the run has had, is what the planner may risk by running fewer replicas
than its hold keeps.

The hold keeps a count wanted in the last minutes as insurance: if that load comes back, the replicas are
up. A replica given up below the hold costs, if the load comes back at once, what it would have served
while a replacement starts: at most one replica's rate over the planning horizon (cold start + lead),
each request of it late. ``risk`` is the share of that worst case the budget is charged per replica
(1: the worst case). So the hold may give up ``floor(spare / (risk x rate x horizon))`` replicas, where
``spare = budget x finished - misses``: none while the run has missed more than its budget allows (a run
at or below its SLO keeps its hold as without the budget), more as requests finish within the targets,
fewer again when the misses come. Past only (finished requests); no clock, no randomness.
"""

from __future__ import annotations

import math

from controlplane.request_latency import request_latencies
from controlplane.types import RequestStatus

__all__ = ["MissBudget", "meets_targets"]


def meets_targets(request, ttft_s: float, tpot_s: float) -> bool:
    """Whether a finished request met the SLO: completed, its TTFT and TPOT within the targets (a one-token
    output has no TPOT to miss), as the benchmark counts attainment."""
    if request.status is not RequestStatus.COMPLETED:
        return False
    ttft, tpot, _, _ = request_latencies(request)
    return ttft is not None and ttft <= ttft_s and (tpot is None or tpot <= tpot_s)


class MissBudget:
    """A model's finished requests and misses, and the replicas below the hold they let the planner risk.

    ``budget``: the share of requests allowed to miss (the SLO's 1 - attainment target); ``risk``: the share
    of a released replica's rate over the horizon counted as misses should its load come back at once."""

    def __init__(self, budget: float, risk: float = 1.0) -> None:
        if not 0.0 < budget < 1.0:
            raise ValueError(f"miss_budget must be in (0, 1), got {budget}")
        if not 0.0 < risk <= 1.0:
            raise ValueError(f"miss_budget_risk must be in (0, 1], got {risk}")
        self.budget, self.risk = budget, risk
        self.finished = 0
        self.misses = 0

    def add(self, met: bool) -> None:
        """One finished (completed, rejected or failed) request, and whether it met the SLO."""
        self.finished += 1
        self.misses += not met

    @property
    def spare(self) -> float:
        """Misses the budget still allows: ``budget x finished - misses`` (negative: over budget)."""
        return self.budget * self.finished - self.misses

    def per_replica(self, rate_per_s: float, horizon_s: float) -> float:
        """The misses one released replica is charged: ``risk x`` its rate over the horizon."""
        return self.risk * max(0.0, rate_per_s) * max(0.0, horizon_s)

    def releasable(self, rate_per_s: float, horizon_s: float) -> int:
        """Replicas the hold may give up below its count: the spare over the charge per replica (0 when
        there is no spare or nothing to charge)."""
        charge = self.per_replica(rate_per_s, horizon_s)
        spare = self.spare
        if spare <= 0 or charge <= 0:
            return 0
        return int(math.floor(spare / charge + 1e-9))
