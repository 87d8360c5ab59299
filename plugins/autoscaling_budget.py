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

``charge="onsets"`` charges each released replica what the run's own onsets cost instead (`OnsetCosts`): at
every onset (a tick that wants more replicas than were up or starting) the planner was short by some replicas
for a horizon; the misses among the requests that arrived in that horizon, over the worst case of those short
replicas (their rate over the horizon), are the share of the worst case one replica short cost; the charge is
the settled onsets' pooled share (never below ``risk``, the worst case before ``min_onsets`` have settled). And
`episode_count`: the release gives up only counts whose episode is over (not wanted within the horizon), as the
re-arm's release does, so a count wanted a second ago is not given up when the want dips by one.

`gap_guard` (``releases="gaps"``): also not counts whose recorded gaps put their return within a cold start of
the time they would have to be started again (``rearm_lead`` horizons ahead of it), as the re-arm's release does
(a span off shorter than a cold start costs more than it saves; the top count recurring every couple of minutes
was given up and started again at each return); and such a count, released earlier, is started again when its
return is that near. ``reserve``: the share of the allowance never spent (spare = (1 - reserve) x budget x
finished - misses), so one released onset that costs more than its charge does not take the run below its SLO.
`backlog_record`: a want raised by the queue into the released counts does not renew their hold.
"""

from __future__ import annotations

import math

from controlplane.request_latency import request_latencies
from controlplane.types import RequestStatus

__all__ = ["MissBudget", "OnsetCosts", "backlog_record", "episode_count", "gap_guard", "meets_targets"]


def meets_targets(request, ttft_s: float, tpot_s: float) -> bool:
    """Whether a finished request met the SLO: completed, its TTFT and TPOT within the targets (a one-token
    output has no TPOT to miss), as the benchmark counts attainment."""
    if request.status is not RequestStatus.COMPLETED:
        return False
    ttft, tpot, _, _ = request_latencies(request)
    return ttft is not None and ttft <= ttft_s and (tpot is None or tpot <= tpot_s)


def episode_count(last_wanted: dict[int, float], now_s: float, horizon_s: float) -> int:
    """The largest count wanted within the last ``horizon_s`` (its episode not over; 0: none): the budget's release
    never goes below it. ``last_wanted``: count -> when at least it was last wanted (`RecurrenceHold.last`)."""
    return max((k for k, t in last_wanted.items() if now_s - t <= horizon_s), default=0)


def backlog_record(wanted: int, unqueued: int, kept: int, released_to: int) -> int:
    """The count the hold records for a tick (``miss_budget_backlog_renews: False``): ``wanted``, unless the want
    rose through the backlog into the counts the budget released (``released_to`` < ``wanted`` <= ``kept``, the
    hold's count before the release); then the want without the queue (``unqueued``), at least ``released_to``. A
    release that leaves the planner short builds a queue, and the queue's want would otherwise renew the released
    count's hold for the whole delay."""
    if unqueued < wanted and released_to < wanted <= kept:
        return max(unqueued, released_to)
    return wanted


def gap_guard(hold, now_s: float, horizon_s: float, cold_s: float) -> tuple[int, int]:
    """``(floor, due)`` for ``releases="gaps"``, over the counts still within their hold (`RecurrenceHold`):
    ``floor``, the largest count the budget may not give up: one wanted within ``horizon_s`` (its episode not
    over), or one whose soonest recorded gap longer than the time since it was last wanted ends within
    ``rearm_lead`` horizons and a cold start (it would be off for less than a cold start before it must be
    started again ``rearm_lead`` horizons ahead of that return); ``due``, the largest count whose such return is
    within ``rearm_lead`` horizons (0: none), to start again, as the re-arm does. A count with no recorded gap
    longer than the time since it was last wanted (no known return) may be given up once its episode is over."""
    lead = hold.rearm_lead * horizon_s
    floor = due = 0
    for k, t in hold.last.items():
        ago = now_s - t
        if ago > hold.hold_s(k)[0]:
            continue
        if ago <= horizon_s:
            floor = max(floor, k)
            continue
        later = [g for g in hold.gaps.get(k, ()) if g > ago]
        if later and min(later) - lead - ago <= cold_s:
            floor = max(floor, k)
            due = max(due, k) if min(later) - lead - ago <= 0 else due
    return floor, due


class OnsetCosts:
    """The run's onsets and what being short at them cost. An onset opens at a tick that wants more replicas than
    the ``had`` up or starting (at least one: a start from zero is the cold start, not a release's cost) while none
    is open, and lasts a horizon; it was short by the most it wanted in that horizon less ``had``. Each miss that
    arrived within an onset's horizon is counted to it. `share`: the settled onsets' (closed a horizon ago, so
    most of their requests have finished) misses over their worst case, the short replicas' rate over the horizon.
    """

    def __init__(self) -> None:
        self.onsets: list[list[float]] = []  # [start, end, had, short, worst case per short replica, misses]

    def tick(self, now_s: float, wanted: int, had: int, rate_per_s: float, horizon_s: float) -> None:
        """One tick's want, and the replicas up or starting before its decision."""
        last = self.onsets[-1] if self.onsets else None
        if last is not None and now_s <= last[1]:
            last[3] = max(last[3], wanted - last[2])
        elif wanted > had > 0:
            self.onsets.append([now_s, now_s + horizon_s, had, wanted - had, max(0.0, rate_per_s) * horizon_s, 0])

    def missed(self, arrival_s: float) -> None:
        """A finished request that missed the SLO, by its arrival."""
        for onset in reversed(self.onsets):
            if onset[0] <= arrival_s <= onset[1]:
                onset[5] += 1
                return
            if onset[1] < arrival_s:
                return

    def share(self, now_s: float, min_onsets: int) -> float | None:
        """The settled onsets' misses over their worst case (None: fewer than ``min_onsets`` settled)."""
        settled = [o for o in self.onsets if o[1] + (o[1] - o[0]) <= now_s and o[3] * o[4] > 0]
        if len(settled) < min_onsets:
            return None
        return sum(o[5] for o in settled) / sum(o[3] * o[4] for o in settled)


class MissBudget:
    """A model's finished requests and misses, and the replicas below the hold they let the planner risk.

    ``budget``: the share of requests allowed to miss (the SLO's 1 - attainment target); ``risk``: the share
    of a released replica's rate over the horizon counted as misses should its load come back at once (with
    ``charge="onsets"``: the least share charged; the run's onsets' share when higher)."""

    def __init__(self, budget: float, risk: float = 1.0, charge: str = "fixed", min_onsets: int = 3,
                 reserve: float = 0.0) -> None:
        if not 0.0 < budget < 1.0:
            raise ValueError(f"miss_budget must be in (0, 1), got {budget}")
        if not 0.0 < risk <= 1.0:
            raise ValueError(f"miss_budget_risk must be in (0, 1], got {risk}")
        if charge not in ("fixed", "onsets"):
            raise ValueError(f"miss_budget_charge must be 'fixed' or 'onsets', got {charge!r}")
        if not 0.0 <= reserve < 1.0:
            raise ValueError(f"miss_budget_reserve must be in [0, 1), got {reserve}")
        self.budget, self.risk, self.charge, self.min_onsets = budget, risk, charge, min_onsets
        self.reserve = reserve
        self.finished = 0
        self.misses = 0
        self.onsets = OnsetCosts() if charge == "onsets" else None
        self.share = risk  # the share of the worst case charged per released replica now (`tick`)

    def add(self, met: bool, arrival_s: float | None = None) -> None:
        """One finished (completed, rejected or failed) request, whether it met the SLO, and when it arrived."""
        self.finished += 1
        self.misses += not met
        if not met and self.onsets is not None and arrival_s is not None:
            self.onsets.missed(arrival_s)

    def tick(self, now_s: float, wanted: int, had: int, rate_per_s: float, horizon_s: float) -> None:
        """One tick (``charge="onsets"``: the onsets' record, and the share charged from now)."""
        if self.onsets is not None:
            self.onsets.tick(now_s, wanted, had, rate_per_s, horizon_s)
            seen = self.onsets.share(now_s, self.min_onsets)
            self.share = 1.0 if seen is None else max(self.risk, seen)

    @property
    def spare(self) -> float:
        """Misses the budget still allows: ``(1 - reserve) x budget x finished - misses`` (negative: over)."""
        return (1.0 - self.reserve) * self.budget * self.finished - self.misses

    def per_replica(self, rate_per_s: float, horizon_s: float) -> float:
        """The misses one released replica is charged: ``risk x`` its rate over the horizon (``charge="onsets"``:
        the share `tick` set)."""
        return self.share * max(0.0, rate_per_s) * max(0.0, horizon_s)

    def releasable(self, rate_per_s: float, horizon_s: float) -> int:
        """Replicas the hold may give up below its count: the spare over the charge per replica (0 when
        there is no spare or nothing to charge)."""
        charge = self.per_replica(rate_per_s, horizon_s)
        spare = self.spare
        if spare <= 0 or charge <= 0:
            return 0
        return int(math.floor(spare / charge + 1e-9))
