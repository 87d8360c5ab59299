"""What a run's batches cost: GPU-seconds per iteration, per prefilled token and per decoded token,
fitted to the batches as they finish, for the estimate of what response-cache hits saved.

Each finished batch adds its iterations ``k``, prefilled tokens ``p``, decoded tokens ``d`` and busy
GPU-seconds ``y`` to nine running sums (no list: memory does not grow with the run). At the end a
least-squares fit ``y = a k + b p + c d`` gives ``a`` (what an iteration costs however little it
carries), ``b`` and ``c`` (what one more prefilled or decoded token adds to a batch). A coefficient
the fit makes negative is left out and the others fitted again.

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
    __slots__ = ("_sums",)

    def __init__(self) -> None:
        # kk, kp, kd, pp, pd, dd, ky, py, dy
        self._sums = [0.0] * 9

    def add(self, k: int, p: int, d: int, y: float) -> None:
        """One finished batch: ``k`` iterations, ``p`` prefilled and ``d`` decoded tokens, ``y`` busy GPU-seconds."""
        s = self._sums
        s[0] += k * k
        s[1] += k * p
        s[2] += k * d
        s[3] += p * p
        s[4] += p * d
        s[5] += d * d
        s[6] += k * y
        s[7] += p * y
        s[8] += d * y

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
