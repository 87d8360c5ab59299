"""How long the SLO planner keeps replicas it no longer wants (`RecurrenceHold`): each replica count
is kept after it was last wanted for at most the scale-down delay, and for less once the run has
shown how soon wanting that count comes back."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RateHold", "RecurrenceHold", "SteadyWant"]


class RecurrenceHold:
    """For each replica count ``k``: when the planner last wanted at least ``k``, and the gaps after
    which wanting at least ``k`` came back (the last ``memory`` of them; a return within
    ``min_gap_s`` of the last want is the same episode, not a gap).

    Count ``k`` is kept ``min(delay_s, margin x the longest gap seen at k)`` after it was last wanted;
    before ``min_gaps`` gaps were seen at ``k`` (or with ``margin`` None), for the whole ``delay_s``.
    So a count that has always come back within 90 s is released once 90 s pass without it, and a
    count never seen to come back is kept as long as the plain delay keeps it. Only the run's past
    is used: no look-ahead, no clock, no randomness."""

    def __init__(self, delay_s: float, margin: float | None, min_gaps: int = 1, memory: int = 32,
                 rearm_lead: float = 2.0, onset_hazard: float | None = None, onset_min_gaps: int = 3,
                 onset_prior: float = 0.0, onset_min_later: int = 1) -> None:
        self.delay_s, self.margin, self.min_gaps, self.rearm_lead = delay_s, margin, min_gaps, rearm_lead
        self.memory = memory
        self.onset_hazard, self.onset_min_gaps, self.onset_prior = onset_hazard, onset_min_gaps, onset_prior
        self.onset_min_later = onset_min_later
        self.last: dict[int, float] = {}  # count -> when at least it was last wanted
        self.gaps: dict[int, deque[float]] = {}  # count -> gaps after which it was wanted again
        self._version: dict[int, int] = {}  # count -> gaps appended so far (the off windows' cache key)
        self._off: dict[int, tuple[tuple, list[tuple[float, float]]]] = {}

    def add(self, now_s: float, wanted: int, min_gap_s: float) -> None:
        """The count wanted at ``now_s``; ``min_gap_s``: shorter returns are the same episode."""
        for k in range(1, wanted + 1):
            t = self.last.get(k)
            if self.margin is not None and t is not None and now_s - t >= min_gap_s:
                self.gaps.setdefault(k, deque(maxlen=self.memory)).append(now_s - t)
                self._version[k] = self._version.get(k, 0) + 1
            self.last[k] = now_s

    def _onset_gaps(self, k: int) -> deque[float] | None:
        """Count ``k``'s gaps when the onset forecast runs for it (on, ``onset_min_gaps`` seen), else None."""
        gaps = self.gaps.get(k)
        if self.onset_hazard is None or gaps is None or len(gaps) < self.onset_min_gaps:
            return None
        return gaps

    def hazard(self, k: int, ago_s: float, lead_s: float) -> tuple[float, int, int] | None:
        """The onset forecast of count ``k`` wanted ``ago_s`` ago: ``(hazard, soon, later)``, where
        ``later`` of its gaps were longer than ``ago_s`` and ``soon`` of those ended within ``lead_s``
        more: the run's own estimate of the chance that it is wanted again within ``lead_s``, given
        that it has not been so far (the empirical hazard of its gaps). None: off, or fewer than
        ``onset_min_gaps`` gaps seen, or fewer than ``onset_min_later`` longer than ``ago_s`` (no pattern
        yet: the chance would rest on too few gaps)."""
        gaps = self._onset_gaps(k)
        if gaps is None:
            return None
        later = [g for g in gaps if g > ago_s]
        if later and len(later) < self.onset_min_later:
            return None
        soon = sum(1 for g in later if g <= ago_s + lead_s)
        if self.onset_prior:  # shrunk toward the memoryless chance (exponential gaps of the same mean)
            memoryless = 1.0 - math.exp(-lead_s / (sum(gaps) / len(gaps)))
            return (soon + self.onset_prior * memoryless) / (len(later) + self.onset_prior), soon, len(later)
        return (soon / len(later) if later else 0.0), soon, len(later)

    def off_windows(self, k: int, horizon_s: float, cold_s: float) -> list[tuple[float, float]]:
        """The ``(off_from, off_until)`` spans after count ``k`` was last wanted in which it is released:
        with the onset forecast (`hazard`, once ``onset_min_gaps`` gaps were seen), every span after
        its episode (``horizon_s``) and within its hold where the chance of its return within
        ``rearm_lead`` horizons is below ``onset_hazard``, each longer than a cold start (a replica off
        for less costs more to restart than it saves); else `rearm_window`'s one span, or none."""
        gaps = self._onset_gaps(k)
        if gaps is None:
            window = self.rearm_window(k, horizon_s, cold_s)
            return [] if window is None else [window]
        key = (self._version.get(k, 0), horizon_s, cold_s)
        cached = self._off.get(k)
        if cached is not None and cached[0] == key:
            return cached[1]
        hold, _ = self.hold_s(k)
        lead = self.rearm_lead * horizon_s
        # the hazard is constant between these points: where a gap enters the lead, and where it ends
        points = sorted({horizon_s, hold, *(p for g in gaps for p in (g - lead, g) if horizon_s < p < hold)})
        spans: list[tuple[float, float]] = []
        for a, b in zip(points, points[1:]):
            seen = self.hazard(k, (a + b) / 2, lead)
            if seen is not None and seen[0] < self.onset_hazard:
                if spans and spans[-1][1] == a:
                    spans[-1] = (spans[-1][0], b)
                else:
                    spans.append((a, b))
        # one reaching the hold's end runs on past it (the count is not started again just as its hold ends)
        spans = [(a, math.inf if b >= hold else b) for a, b in spans if b - a > cold_s]
        self._off[k] = (key, spans)
        return spans

    def hold_s(self, k: int) -> tuple[float, bool]:
        """How long count ``k`` is kept after it was last wanted, and whether that was learned
        (False: the plain delay)."""
        gaps = self.gaps.get(k)
        if self.margin is None or gaps is None or len(gaps) < self.min_gaps:
            return self.delay_s, False
        learned = self.margin * max(gaps)
        return (learned, True) if learned < self.delay_s else (self.delay_s, False)

    def rearm_window(self, k: int, horizon_s: float, cold_s: float) -> tuple[float, float] | None:
        """``(off_from, off_until)`` seconds after count ``k`` was last wanted in which it is released and
        not kept: from the end of its episode (``horizon_s``) until ``rearm_lead`` horizons before the
        soonest gap after which it has been wanted again (one horizon to be ready; one more because
        when a want starts and ends within an episode jitters by about that much), when that is longer
        than a cold start (a replica off for less costs more to restart than it saves). None: kept
        throughout its hold."""
        gaps = self.gaps.get(k)
        if self.margin is None or gaps is None or len(gaps) < self.min_gaps:
            return None
        off_from, off_until = horizon_s, min(gaps) - self.rearm_lead * horizon_s
        return (off_from, off_until) if off_until - off_from > cold_s else None

    def kept(self, now_s: float, horizon_s: float, cold_s: float) -> tuple[int, float, float, bool, bool]:
        """Like `held`, with each learned count released between its episode and a horizon before its
        soonest return (`rearm_window`): ``(count, wanted_ago_s, hold_s, learned, rearmed)``, rearmed
        when the count is kept again after such a release (the planner then starts it ahead) and its hold
        has more than a cold start left (a replica started later would be released before it is ready:
        a count whose soonest return lies past its hold, or one the steady mode ran below, was started
        seconds before its hold ended and stopped again)."""
        for k in sorted(self.last, reverse=True):
            ago = now_s - self.last[k]
            hold, learned = self.hold_s(k)
            if ago > hold:
                continue
            windows = self.off_windows(k, horizon_s, cold_s)
            if any(a < ago < b for a, b in windows):
                continue
            return k, ago, hold, learned, any(ago >= b for _, b in windows) and hold - ago > cold_s
        return 0, 0.0, 0.0, False, False

    def held(self, now_s: float) -> tuple[int, float, float, bool]:
        """``(count, wanted_ago_s, hold_s, learned)``: the largest count still within its hold (0 when
        none is), how long ago it was last wanted, its hold, and whether the hold was learned."""
        for k in sorted(self.last, reverse=True):
            ago = now_s - self.last[k]
            hold, learned = self.hold_s(k)
            if ago <= hold:
                return k, ago, hold, learned
        return 0, 0.0, 0.0, False


class SteadyWant:
    """On a steady load (`RateForecaster.excess_cv` low), the count to run: the ``quantile`` of the
    counts wanted at the ticks of the last ``window_s`` (nearest rank, the current tick included),
    so a count wanted by a few ticks only - a heavy-tailed prompt's swing of the request-shape
    estimate, not more load - neither starts a replica nor is kept for the scale-down delay; and
    never down within ``stable_s`` of the last scale-up (no oscillation). Past only; no clock."""

    def __init__(self, window_s: float, quantile: float, stable_s: float) -> None:
        self.window_s, self.quantile, self.stable_s = window_s, quantile, stable_s
        self.wants: deque[tuple[float, int]] = deque()
        self._counts: dict[int, int] = {}  # count -> ticks of the window that wanted it (the wants, tallied)
        self._want: int | None = None  # `want` of the window as it is now (None: not asked since it changed)
        self.last_up: float | None = None
        self.last_steady_up: float | None = None  # the last scale-up made while the load was called steady

    def add(self, now_s: float, wanted: int) -> None:
        """The count wanted at ``now_s`` (every tick, steady or not, so the window is full when needed)."""
        wants, counts = self.wants, self._counts
        wants.append((now_s, wanted))
        counts[wanted] = counts.get(wanted, 0) + 1
        while wants and now_s - wants[0][0] > self.window_s:
            _, w = wants.popleft()
            if counts[w] == 1:
                del counts[w]
            else:
                counts[w] -= 1
        self._want = None

    def want(self) -> int:
        """The window's ``quantile`` of the counts wanted (0 before any): the count at that rank of the
        wants sorted, found by walking the tally's few distinct counts (a window holds hundreds of ticks)."""
        if self._want is None:
            n = len(self.wants)
            rank = min(n - 1, max(0, math.ceil(self.quantile * n) - 1))
            self._want = 0
            for w in sorted(self._counts):
                rank -= self._counts[w]
                if rank < 0:
                    self._want = w
                    break
        return self._want

    def target(self, now_s: float, current: int, floor: int, steady_ups_only: bool = False) -> int:
        """What to run now: the window's quantile (at least ``floor``), not below ``current`` within
        ``stable_s`` of the last scale-up (``steady_ups_only``: of the last one made on a steady load, so
        counts raised before the load was called steady - the start-up - do not hold; none yet: no lock)."""
        t = max(floor, self.want())
        up = self.last_steady_up if steady_ups_only else self.last_up
        if t < current and up is not None and now_s - up < self.stable_s:
            t = current
        return t

    def locked(self, now_s: float, called: bool) -> float | None:
        """When the scale-up that forbids a scale-down now was made (None: none does), on a load not called
        steady: while it could not be called steady yet (``called`` False), any scale-up within ``stable_s``;
        once it could (the steady mode has just been left), one made on a steady load within ``stable_s``, so
        a flip of the steady test does not give up at once what the steady mode's lock (`target`) kept."""
        up = self.last_steady_up if called else self.last_up
        return up if up is not None and now_s - up < self.stable_s else None

    def scaled(self, now_s: float, current: int, target: int, steady: bool = False) -> None:
        """The target applied this tick (any mode): remembers when it last went up (and, ``steady``,
        when it last went up on a steady load)."""
        if target > current:
            self.last_up = now_s
            if steady:
                self.last_steady_up = now_s


class RateHold:
    """`hold_unit` ``"rate"`` / ``"rate_window"``: what a count kept by the hold stands for is the service rate it
    was wanted for (the count times one replica's planned rate, capacity x utilization, at the tick it was last
    wanted), not the number of replicas. Kept now, that rate is served by ``ceil(rate / rate per replica)``
    replicas at the capacity now (``"rate"``) or at the mean of the capacities of the last ``window_s`` ticks
    (``"rate_window"``): never more than the count itself. A burst of long prompts wants more replicas of a
    smaller capacity; once the request shape is back, the load the hold insures against needs fewer. Past
    only; no clock."""

    def __init__(self, window_s: float, at: str = "rate") -> None:
        self.window_s, self.at = window_s, at
        self.rate: dict[int, float] = {}  # count -> the rate (req/s) its want stood for, when last wanted
        self.serves: deque[tuple[float, float]] = deque()  # (tick, planned rate per replica)
        self.total = 0.0

    def add(self, now_s: float, wanted: int, serve: float) -> None:
        """The count wanted (the one the hold records) at ``now_s``, one replica's planned rate ``serve``."""
        for k in range(1, wanted + 1):
            self.rate[k] = wanted * serve
        self.serves.append((now_s, serve))
        self.total += serve
        while now_s - self.serves[0][0] > self.window_s:
            self.total -= self.serves.popleft()[1]

    def count(self, kept: int, serve: float) -> int:
        """The replicas that serve now the rate count ``kept`` (and each count below it) was last wanted for;
        at most ``kept``."""
        rate = max((self.rate.get(k, 0.0) for k in range(1, kept + 1)), default=0.0)
        per = serve if self.at == "rate" else self.total / max(1, len(self.serves))
        if kept <= 0 or rate <= 0 or per <= 0:
            return kept
        return max(1, min(kept, math.ceil(rate / per - 1e-9)))
