"""How many tokens will a request generate? From the run's own finished answers: a high quantile for
the request itself, the mean for the work queued ahead of it.

A request's ``max_output_tokens`` (the client's ``max_tokens``) is only the most it may take:
OpenAI-style clients often send 4096 or the context size while their answers are a few hundred
tokens. A prediction that takes every request to run to its ``max_tokens`` refuses, under load,
requests that would finish in seconds, and counts the work queued ahead too high by the same
factor (`plugins.finish_time`).

So the lengths of the last ``window`` answers of each model are kept, and a request is expected
to generate ``min(max_output_tokens, q-quantile of them)`` tokens, once at least ``min_finished``
answers were seen; before that, its ``max_output_tokens`` as the most cautious guess. Counted are
completed requests and those blocked after generating (an output guardian checks the whole answer).

A cancelled answer (the client's timeout, or it went away) is cut: its length so far is only a
lower bound on its length. After an overload burst, many are cut after a few tokens because they
waited, not because they were short; counted as their length, they would pull the quantile and
the mean down, and the next predictions would be too optimistic just when they matter. So a
cancelled answer is counted (as its length so far) only when that is at or above the current
quantile: then it says something (the answer was at least that long, a long one) and counting it
errs on the cautious side. Below the quantile, or before there is one (fewer than
``min_finished`` answers), it is left out: all it says is "longer than a length answers often
reach", which the window cannot use without a censored estimate. Leaving it out is exact when
cutting is unrelated to length (a burst's waits) and slightly optimistic when long answers are the
ones cut (those at or above the quantile are kept).

The work queued ahead of a new request sums many such lengths, and a sum of ``n`` lengths is near
``n`` x their mean, not ``n`` x a high quantile: so the tokens still to generate by a waiting
request (`remaining`) are the mean of the window, and by a running one that made ``x`` tokens so
far the mean of the answers longer than ``x``, less ``x`` (one still running at ``x`` is one of
those: past the mean, a long answer is the more likely); both rounded up, at most its
``max_output_tokens`` less ``x``, at least 1 (1 when none in the window ran that long: a rare
outlier counting its whole ``max_tokens`` would refuse every request while it runs).
A high quantile is kept only for the new request's own length (`expected`), where one long answer
is what makes it late.

The quantile and the mean are of the answers' lengths, each cut at its own ``max_tokens``: if every client so
far asked for at most 50 tokens, a new one asking 4096 is expected to take about 50 too. The
window follows the run, so such a guess is corrected as its answers finish.
Only events are read (no wall clock, no random): the same in both modes.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from controlplane.types import RequestStatus

__all__ = ["OutputLengths"]

_COUNTED = (RequestStatus.COMPLETED, RequestStatus.CANCELLED, RequestStatus.BLOCKED)
_CUT = RequestStatus.CANCELLED  # its length so far is a lower bound (see the module's docstring)


class OutputLengths:
    """A bounded window of finished answers' output lengths per model, its quantile and its mean."""

    def __init__(self, window: int = 256, quantile: float = 0.9, min_finished: int = 20) -> None:
        if window < 1 or not 0 < quantile <= 1 or not 1 <= min_finished <= window:
            raise ValueError(f"need window >= 1, 0 < quantile <= 1, 1 <= min_finished <= window; "
                             f"got window={window}, quantile={quantile}, min_finished={min_finished}")
        self.window, self.quantile, self.min_finished = window, quantile, min_finished
        self._lengths: dict[str | None, deque[int]] = {}
        self._cached: dict[str | None, tuple | None] = {}  # model -> _stats, dropped on each finish

    def finished(self, request) -> None:
        """Count ``request``'s answer (a request that never generated anything is not an answer; a
        cancelled one only at or above the current quantile)."""
        if request.status not in _COUNTED or request.output_tokens <= 0:
            return
        if request.status is _CUT:
            q = self.typical(request.model)
            if q is None or request.output_tokens < q:
                return
        lengths = self._lengths.get(request.model)
        if lengths is None:
            lengths = self._lengths[request.model] = deque(maxlen=self.window)
        lengths.append(request.output_tokens)
        self._cached.pop(request.model, None)

    def _stats(self, model) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(quantile, the lengths sorted, the sums of their tails) of ``model``'s answers (None: fewer
        than ``min_finished`` seen)."""
        if model in self._cached:
            return self._cached[model]
        lengths = self._lengths.get(model)
        stats = None
        if lengths is not None and len(lengths) >= self.min_finished:
            a = np.sort(np.fromiter(lengths, dtype=np.int64, count=len(lengths)))
            # nearest rank: an observed length, never below the quantile
            q = int(np.quantile(a, self.quantile, method="inverted_cdf"))
            stats = q, a, np.concatenate((np.cumsum(a[::-1])[::-1], [0]))  # tails[i] = a[i:].sum()
        self._cached[model] = stats
        return stats

    def typical(self, model) -> int | None:
        """The ``quantile`` of ``model``'s answer lengths (None: fewer than ``min_finished`` seen)."""
        stats = self._stats(model)
        return None if stats is None else stats[0]

    def mean(self, model, longer_than: int = 0) -> int | None:
        """The mean of ``model``'s answer lengths over ``longer_than`` tokens, rounded up (None: fewer
        than ``min_finished`` seen, or none that long)."""
        stats = self._stats(model)
        if stats is None:
            return None
        _, a, tails = stats
        i = int(np.searchsorted(a, longer_than, side="right"))
        return None if i == len(a) else -(-int(tails[i]) // (len(a) - i))

    def expected(self, request) -> int:
        """Tokens ``request`` is expected to generate in all: its ``max_output_tokens`` at most."""
        q = self.typical(request.model)
        return request.max_output_tokens if q is None else min(request.max_output_tokens, q)

    def remaining(self, request, made: int | None = None) -> int:
        """Tokens ``request`` is expected still to generate, counted in the work ahead of another: the
        mean of the answers longer than what it made so far, less that; its ``max_output_tokens`` at
        most, at least 1 until it reaches them (before ``min_finished`` answers: all of them).
        ``made``: the tokens it made so far where its ``output_tokens`` lag (a batch not applied yet)."""
        if made is None:
            made = request.output_tokens
        left = request.max_output_tokens - made
        if left <= 0:
            return 0
        if self.typical(request.model) is None:  # too few answers: the most it can take
            return left
        m = self.mean(request.model, longer_than=made)
        return 1 if m is None else min(left, max(1, m - made))

    def remaining_total(self, model, lengths: dict[tuple[int, int], int]) -> int:
        """`remaining` summed over requests of ``model`` given as counts by (``output_tokens``,
        ``max_output_tokens``), as a queue keeps them (`controlplane.waiting_queue`): the same sum, at
        a cost of the distinct pairs rather than of the requests."""
        typical = self.typical(model)
        means: dict[int, int | None] = {}  # made so far -> the mean of the answers longer than that
        total = 0
        for (made, most), n in lengths.items():
            left = most - made
            if left <= 0:
                continue
            if typical is None:
                total += n * left
                continue
            if made in means:
                m = means[made]
            else:
                m = means[made] = self.mean(model, longer_than=made)
            total += n * (1 if m is None else min(left, max(1, m - made)))
        return total
