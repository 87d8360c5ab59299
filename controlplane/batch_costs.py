"""What a run's batches cost: GPU-seconds per iteration, per prefilled token and per decoded token,
fitted to the batches' iterations as they finish, for the estimate of what response-cache hits saved.

Each iteration is one observation: its prefilled tokens ``p``, decoded tokens ``d`` and busy GPU-seconds ``y``,
added to nine running sums (no list: memory does not grow with the run). A batch of several iterations (the
simulator's fast mode: a prefill, then decodes of the same requests) adds each of its iterations, so it adds what
the exact mode's one-iteration batches add (a batch as one observation of its totals weighed a long decode run as
one point, its square sums its length squared, and the two modes fitted other costs: 136.94 against 139.90
GPU-seconds saved on the bundled trace's first 900 s). Of a batch running as the fit begins (the run's first
response-cache hit), the iterations that finished before are left out (`exclude`), as the exact mode's are.

At the end a least-squares fit ``y = a + b p + c d`` gives ``a`` (what an iteration costs however little it
carries), ``b`` and ``c`` (what one more prefilled or decoded token adds to it). A coefficient the fit makes
negative is left out and the others fitted again.

``b`` and ``c`` price the response-cache hits' own tokens (the batched estimate); they are not a
bound on what the hits saved: without the hits the run may have run more iterations (the hits'
tokens in iterations of their own: it saved more) or fewer (the extra requests queued and shared
iterations that ran anyway: it saved less), each at ``a``, which no fit of one run can see.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

__all__ = ["BatchCosts"]


class BatchCosts:
    __slots__ = ("_sums", "started", "_before")

    def __init__(self) -> None:
        # over the iterations (k: 1 each): kk, kp, kd, pp, pd, dd, ky, py, dy
        self._sums = [0.0] * 9
        self.started = False  # the core marked the iterations finished before the fit began (`exclude`)
        self._before: dict[str, tuple[int, int, float]] = {}  # worker -> (batch id, iterations, GPU-seconds)

    def exclude(self, worker_id: str, batch_id: int, k: int, y: float) -> None:
        """The fit begins (the run's first response-cache hit) while ``worker_id`` runs batch ``batch_id``, whose
        first ``k`` iterations (``y`` busy GPU-seconds) finished before: they are left out when it ends, as the
        exact mode's one-iteration batches that ended before the fit began are (`excluded`)."""
        self._before[worker_id] = (batch_id, k, y)

    def excluded(self, worker_id: str, batch_id: int) -> tuple[int, float]:
        """(iterations, GPU-seconds) of batch ``batch_id`` on ``worker_id`` that finished before the fit began
        (`exclude`); (0, 0.0) for every other batch."""
        before = self._before
        if before:
            got = before.pop(worker_id, None)
            if got is not None and got[0] == batch_id:
                return got[1], got[2]
        return 0, 0.0

    def add(self, p: int, d: int, y: float, later: int = 0, later_d: int = 0, later_y: float = 0.0) -> None:
        """One iteration that prefilled ``p`` and decoded ``d`` tokens in ``y`` busy GPU-seconds, and ``later`` more
        after it, each decoding ``later_d`` tokens, in ``later_y`` GPU-seconds together (a batch of several
        iterations): each iteration an observation of its own. (Where ``later_d == d`` and ``p == 0``, every
        iteration alike, how the seconds split between ``y`` and ``later_y`` does not change the fit.)"""
        s = self._sums
        s[0] += 1 + later
        s[1] += p
        s[2] += d + later * later_d
        s[3] += p * p
        s[4] += p * d
        s[5] += d * d + later * later_d * later_d
        s[6] += y + later_y
        s[7] += p * y
        s[8] += d * y + later_d * later_y

    def fit(self) -> tuple[float, float, float] | None:
        """(GPU-seconds per iteration, per prefilled token, per decoded token), each >= 0; None
        before any batch."""
        kk, kp, kd, pp, pd, dd, ky, py, dy = self._sums
        if kk <= 0:
            return None
        gram = np.array([[kk, kp, kd], [kp, pp, pd], [kd, pd, dd]])
        rhs = np.array([ky, py, dy])
        for size in (3, 2, 1):  # the most terms whose fit has no negative coefficient
            for keep in combinations(range(3), size):
                idx = list(keep)
                sub = gram[np.ix_(idx, idx)]
                if np.linalg.matrix_rank(sub) < size:
                    continue
                coef = np.linalg.solve(sub, rhs[idx])
                if (coef >= 0).all():
                    out = [0.0, 0.0, 0.0]
                    for i, c in zip(idx, coef):
                        out[i] = float(c)
                    return out[0], out[1], out[2]
        return 0.0, 0.0, 0.0
