"""Copies of a request among the planner's recent finishes (`RecentShapes`).

The SLO planner estimates the mean request shape (prompt and output tokens) from the requests that finish,
each weighing the same (an EWMA over about 1 / shape_smoothing finishes). A trace scaled up by replication
(`--rate-scale` > 1: each request emitted several times, `sim.traces.scale_rate`) finishes every request
several times within seconds, with the same prompt and output: the copies add load but no information on
the mean shape, and at x11 one 8,000-token prompt's copies move a 50-finish EWMA from ~800 to ~2,200
tokens within a second, so the capacity per replica falls 3x and the hold keeps the count that fall asked
for. `RecentShapes` says whether a finished request's (prompt, output) pair already finished within the
last ``window_s``: the planner then leaves its shape estimate as it is (``shape_copies: once``).
"""

from __future__ import annotations

from collections import Counter, deque

__all__ = ["RecentShapes"]


class RecentShapes:
    """The (prompt, output) pairs of the requests that finished within the last ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, tuple[int, int]]] = deque()
        self._count: Counter[tuple[int, int]] = Counter()

    def seen(self, time_s: float, prompt: int, output: int) -> bool:
        """Record a finish at ``time_s``; True when the same pair finished within the window before it."""
        oldest, seen, count = time_s - self.window_s, self._seen, self._count
        while seen and seen[0][0] < oldest:
            pair = seen.popleft()[1]
            count[pair] -= 1
            if not count[pair]:
                del count[pair]
        pair = (prompt, output)
        again = pair in count
        seen.append((time_s, pair))
        count[pair] += 1
        return again

    def __len__(self) -> int:
        return len(self._seen)
