"""Small, fast interpolators for profiled kernel latencies.

Vidur fits random forests to each profiled operator; on these dense 1-D/2-D grids a
piecewise-linear interpolant is as accurate on held-out points and fits in
milliseconds, so that is what we use. Both interpolators are vectorised and pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["Curve1D", "RatioSurface", "bagged_nn"]

# Probability that a given row lands in a bootstrap sample of the same size (n -> inf).
_BOOTSTRAP_P = 1.0 - math.exp(-1.0)


def _mean_by_key(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ux, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=y)
    counts = np.bincount(inv)
    return ux, sums / counts


def bagged_nn(x: np.ndarray, y: np.ndarray, q: np.ndarray, k: int = 16) -> np.ndarray:
    """Expected prediction of a fully grown bagged regression forest on 1-D data.

    A deep tree fitted to a bootstrap sample answers with the value of the nearest
    *sampled* knot (thresholds sit at midpoints), so the forest's expectation is
    sum_j p (1-p)^j y_(j) over knots ordered by distance, p = 1 - 1/e. This is what
    Vidur's random forests converge to, computed exactly and deterministically.
    ``x`` must be sorted and distinct.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    n = len(x)
    k = min(k, n)
    lo = np.clip(np.searchsorted(x, q) - k, 0, max(n - 2 * k, 0))
    idx = lo[:, None] + np.arange(min(2 * k, n))[None, :]
    dist = np.abs(x[idx] - q[:, None])
    order = np.argsort(dist, axis=1, kind="stable")
    ranked = np.take_along_axis(y[idx], order, axis=1)
    w = _BOOTSTRAP_P * (1.0 - _BOOTSTRAP_P) ** np.arange(ranked.shape[1])
    return (ranked * w).sum(axis=1) / w.sum()


class Curve1D:
    """y(x): linear between knots, flat below the first knot, linear trend above the last.

    The extrapolation slope is a least-squares line through the top quarter of knots
    (at least two), which follows the compute-bound regime of GEMMs and collectives.
    """

    __slots__ = ("x", "y", "slope", "method")

    def __init__(self, x: np.ndarray, y: np.ndarray, slope: float, method: str = "linear") -> None:
        self.x, self.y, self.slope, self.method = x, y, slope, method

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, method: str = "linear") -> Curve1D:
        """``method="linear"`` interpolates; ``"forest"`` reproduces a deep bagged forest (Vidur)."""
        if method not in ("linear", "forest"):
            raise ValueError(f"method must be 'linear' or 'forest', got {method!r}")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            raise ValueError("no finite points to fit")
        ux, uy = _mean_by_key(x[ok], y[ok])
        if len(ux) >= 2:
            k = max(2, len(ux) // 4)
            slope = float(np.polyfit(ux[-k:], uy[-k:], 1)[0])
            slope = max(slope, 0.0)
        else:
            slope = 0.0
        return cls(ux, uy, slope, method)

    def __call__(self, q: np.ndarray | float) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        top = self.x[-1]
        if self.method == "forest":
            out = bagged_nn(self.x, self.y, np.minimum(q, top).ravel()).reshape(q.shape)
            edge = out  # continuous at the last knot: extend from the forest's own value there
        else:
            out = np.interp(q, self.x, self.y)
            edge = self.y[-1]
        hi = q > top
        if np.any(hi):
            out = np.where(hi, edge + self.slope * (q - top), out)
        return out


class RatioSurface:
    """z(u, v) = f(u, v) * r(u, v): a non-negative parametric base times a correction grid.

    ``features(u, v)`` returns the design matrix of the base (e.g. [1, c, c^2, c*kv] for
    prefill attention); ``r`` is the measured/base ratio on the profiled (u, v) levels,
    bilinear inside, clamped outside. Inside the profiled region this reproduces the
    measurements; outside it extrapolates with the physics of the base.
    """

    __slots__ = ("w", "u", "v", "r", "features")

    def __init__(self, u: np.ndarray, v: np.ndarray, z: np.ndarray, features: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        ok = np.isfinite(u) & np.isfinite(v) & np.isfinite(z) & (z > 0)
        u, v, z = u[ok], v[ok], z[ok]
        if len(z) < 4:
            raise ValueError("need at least 4 profiled points for a 2-D surface")
        self.features = features
        X = features(u, v)
        # Relative least squares: every point matters equally, small kernels included.
        from scipy.optimize import nnls  # loaded only when a surface is fitted (scipy is slow to import)

        self.w, _ = nnls(X / z[:, None], np.ones_like(z))
        base = X @ self.w
        if np.any(base <= 0):
            base = np.maximum(base, z.min() * 1e-3)
        ratio = z / base
        self.u = np.unique(u)
        self.v = np.unique(v)
        iu = np.searchsorted(self.u, u)
        iv = np.searchsorted(self.v, v)
        sums = np.zeros((len(self.u), len(self.v)))
        cnt = np.zeros_like(sums)
        np.add.at(sums, (iu, iv), ratio)
        np.add.at(cnt, (iu, iv), 1.0)
        grid = np.full_like(sums, np.nan)
        has = cnt > 0
        grid[has] = sums[has] / cnt[has]
        for i in range(len(self.u)):  # fill gaps along v from the row's own measurements
            row = grid[i]
            known = ~np.isnan(row)
            if not known.all():
                row[~known] = np.interp(self.v[~known], self.v[known], row[known])
        self.r = grid

    def base(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.features(u, v) @ self.w

    def ratio(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return _bilinear(self.u, self.v, self.r, u, v)

    def __call__(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
        u, v = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
        flat_u, flat_v = u.ravel(), v.ravel()
        out = self.base(flat_u, flat_v) * self.ratio(flat_u, flat_v)
        return out.reshape(u.shape)


def _bilinear(gu: np.ndarray, gv: np.ndarray, grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear interpolation on a rectilinear grid, clamping queries to the grid box."""

    def locate(g: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(g) == 1:
            return np.zeros(q.shape, dtype=np.intp), np.zeros(q.shape)
        qc = np.clip(q, g[0], g[-1])
        i = np.clip(np.searchsorted(g, qc, side="right") - 1, 0, len(g) - 2)
        t = (qc - g[i]) / (g[i + 1] - g[i])
        return i, t

    iu, tu = locate(gu, u)
    iv, tv = locate(gv, v)
    iu1 = np.minimum(iu + 1, len(gu) - 1)
    iv1 = np.minimum(iv + 1, len(gv) - 1)
    a = grid[iu, iv] * (1 - tv) + grid[iu, iv1] * tv
    b = grid[iu1, iv] * (1 - tv) + grid[iu1, iv1] * tv
    return a * (1 - tu) + b * tu
