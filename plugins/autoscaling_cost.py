"""The mean of each recent request's own prefill cost, for the SLO planner's replica capacity.

A replica's capacity computed for the mean request shape prices the mean prompt; when prefill time
grows faster than linearly with the prompt (attention), the mean prompt's cost understates the mean
cost per request, the more so the heavier the prompts' tail. `RequestCosts` prices each arriving
request's prompt with the run's latency model (``price(prompt_tokens) -> seconds``: the planner
passes ``ScalingContext.iteration_s(prompt, 0, 0)``, the whole prompt prefilled as one batch), keeps
the mean over the requests that arrived in the last ``window_s`` (at least the last
``min_requests``), and gives the **cost-equivalent prompt**: the prompt whose own price is that
mean. Sizing a replica at that prompt charges each request what it costs on average. A prompt's
price is known when it arrives, so a long prompt counts at once, and a window of arrivals, not an
EWMA of finishes, so one long prompt finishing moves it by its share of the window only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

__all__ = ["RequestCosts"]


class RequestCosts:
    """Prices of the prompts that arrived in the last ``window_s`` (at least the last ``min_requests``).

    A prompt is priced at the nearest point of a grid of ``1 / steps_per_e`` steps in log tokens (1%
    apart by default), each point priced once: a latency model asked about a 100k-token prefill can take
    a millisecond, and a run asks about thousands of prompts and a bisection per tick."""

    def __init__(self, window_s: float, min_requests: int, steps_per_e: int = 100,
                 spread_window_s: float | None = None) -> None:
        self.window_s = window_s
        self.spread_window_s = window_s if spread_window_s is None else spread_window_s  # `price_moment_ratio`'s
        self.min_requests = max(1, min_requests)
        self.steps = steps_per_e
        self._pending: list[tuple[float, float]] = []  # (arrival time, prompt tokens) not yet priced
        self._priced: deque[tuple[float, float, int, float]] = deque()  # (time, prompt, grid key, price)
        self._sum = 0.0
        self._spread: deque[tuple[float, float, int]] = deque()  # (time, price, grid key) of spread_window_s (at
        # least min_requests)
        self._spread_sums = [0.0, 0.0]  # their prices and squared prices
        self._spread_counts: dict[int, int] = {}  # grid key -> prompts of the spread window at it
        self._prompt_sum = 0.0
        # the window's grid keys as sliding minima and maxima (each item's key leaves in arrival order): the
        # front of `_lows` is its shortest prompt's key, of `_highs` its longest's
        self._lows: deque[int] = deque()
        self._highs: deque[int] = deque()
        self._grid: dict[int, float] = {}  # grid key -> price
        self._effective: float | None = None  # the cost-equivalent prompt of the current window
        self._changed = False

    def add(self, time_s: float, prompt_tokens: float) -> None:
        """A request arrived with ``prompt_tokens`` (priced at the next `effective_prompt`)."""
        self._pending.append((time_s, max(1.0, float(prompt_tokens))))

    def __len__(self) -> int:
        return len(self._priced) + len(self._pending)

    def _tokens(self, key: int) -> float:
        return math.exp(key / self.steps)

    def _price(self, key: int, price: Callable[[float], float]) -> float:
        c = self._grid.get(key)
        if c is None:
            c = self._grid[key] = float(price(self._tokens(key)))
        return c

    def _update(self, now_s: float, price: Callable[[float], float]) -> None:
        for t, p in self._pending:
            key = round(math.log(p) * self.steps)
            c = self._price(key, price)
            self._priced.append((t, p, key, c))
            self._sum += c
            self._spread.append((t, c, key))
            self._spread_sums[0] += c
            self._spread_sums[1] += c * c
            self._spread_counts[key] = self._spread_counts.get(key, 0) + 1
            self._prompt_sum += p
            self._changed = True
            lows, highs = self._lows, self._highs
            while lows and lows[-1] > key:
                lows.pop()
            lows.append(key)
            while highs and highs[-1] < key:
                highs.pop()
            highs.append(key)
        self._pending.clear()
        q = self._priced
        while len(q) > self.min_requests and now_s - q[0][0] > self.window_s:
            _, p, key, c = q.popleft()
            self._sum -= c
            self._prompt_sum -= p
            self._changed = True
            if self._lows[0] == key:
                self._lows.popleft()
            if self._highs[0] == key:
                self._highs.popleft()
        spread, sums, counts = self._spread, self._spread_sums, self._spread_counts
        while len(spread) > self.min_requests and now_s - spread[0][0] > self.spread_window_s:
            _, c, key = spread.popleft()
            sums[0] -= c
            sums[1] -= c * c
            if counts[key] == 1:
                del counts[key]
            else:
                counts[key] -= 1

    def price_moment_ratio(self) -> float | None:
        """``E[price²] / E[price]²`` of the prompts that arrived in the last ``spread_window_s`` (at least the
        last ``min_requests``; as of the last update; at least 1, None before any): how much longer a queue
        of their prefills waits than one of equal prefills (the Pollaczek-Khinchine mean wait grows with
        the service time's second moment). 1 when every prompt costs the same; Mooncake's heavy tail: 6-10
        over 300 s. A property of the prompts' distribution, driven by its rare longest prompts, so it may
        be given a longer window than the mean price's."""
        n = len(self._spread)
        if not n or self._spread_sums[0] <= 0:
            return None
        return max(1.0, (self._spread_sums[1] / n) / (self._spread_sums[0] / n) ** 2)

    def spread_prompts(self) -> list[tuple[float, int]]:
        """``(prompt tokens, how many)`` of the prompts that arrived in the last ``spread_window_s`` (at least the
        last ``min_requests``; as of the last update), one row per grid point (1% apart), the longest first."""
        return [(self._tokens(k), n) for k, n in sorted(self._spread_counts.items(), reverse=True)]

    def mean_cost(self, now_s: float, price: Callable[[float], float]) -> float | None:
        """The mean price of the window's prompts (None before any arrived)."""
        self._update(now_s, price)
        return self._sum / len(self._priced) if self._priced else None

    def mean_prompt(self) -> float | None:
        """The plain mean prompt of the window (as of the last update; None before any)."""
        return self._prompt_sum / len(self._priced) if self._priced else None

    def effective_prompt(self, now_s: float, price: Callable[[float], float]) -> float | None:
        """The prompt whose price is the window's mean price (None before any request arrived).

        Found by bisection on the grid between the window's shortest and longest prompt (the mean price
        lies between their prices when the price grows with the prompt), then linearly between the two
        grid points whose prices bracket the mean: the mean prompt when the price is linear in it,
        above it when the price is convex."""
        mean = self.mean_cost(now_s, price)
        if mean is None:
            return None
        if not self._changed and self._effective is not None:
            return self._effective
        lo, hi = self._lows[0], self._highs[0]
        if self._price(lo, price) >= mean or lo == hi:
            self._effective = self._tokens(lo)
        else:  # price(lo) < mean <= price(hi), kept while the bracket narrows to adjacent points
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._price(mid, price) < mean:
                    lo = mid
                else:
                    hi = mid
            c_lo, c_hi = self._price(lo, price), self._price(hi, price)
            share = (mean - c_lo) / (c_hi - c_lo) if c_hi > c_lo else 1.0
            self._effective = self._tokens(lo) + share * (self._tokens(hi) - self._tokens(lo))
        self._changed = False
        return self._effective
