"""The Vidur model's prediction tables, made nondecreasing: more tokens, more sequences or a longer
context never cost less.

Vidur's profiles are noisy (an H100 Llama-2-7B linear layer timed 96 tokens slower than 112; the A100
reference attention profile times a decode of 18 sequences slower than 22), and so are the curves
fitted through them. Each term (linear layers with their all-reduces, KV-cache save, prefill and
decode attention) is therefore tabulated on Vidur's prediction grid and replaced by its running
maximum along every argument: the least nondecreasing function at least the fitted one. Past the
table a term comes from the fitted curve or surface (`MonotoneGrid`), still as that running maximum.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._interp import Curve1D, RatioSurface

__all__ = ["MonotoneGrid", "Tables", "ceil_to", "linear_ms", "tables"]


def ceil_to(x: int, g: int) -> int:
    return -(-x // g) * g


def linear_ms(n: np.ndarray, curves: tuple[Curve1D, ...], all_reduce: Curve1D | None, comm_const: float,
              layers: int) -> np.ndarray:
    """Layers x (linear ops + 2 all-reduces) at token count n (already rounded to 8), as fitted."""
    per_layer = np.zeros_like(n, dtype=np.float64)
    for curve in curves:
        per_layer = per_layer + curve(n)
    if all_reduce is not None:
        per_layer = per_layer + 2.0 * (all_reduce(n) + comm_const)
    return np.where(n > 0, layers * per_layer, 0.0)


class MonotoneGrid:
    """``scale x surface(u, v)`` made nondecreasing in both arguments on the grid ``u = i x du``, ``v = j x dv``
    (``i >= i0, j >= j0``: the points a model asks for): at each point the largest value of the surface at or
    below it.

    Tabulated for ``i < nu, j < nv``, a box covering the surface's profiled one; past it, where the surface's
    correction ratio is clamped (`RatioSurface`), the maximum comes from its non-negative, nondecreasing base:
    past the box in ``u`` the surface is ``base(u, v) x r(u_top, v)``, so the largest value at or below
    ``(u, v)`` is the table's at ``(u_top, v)`` or ``base(u, v') x r(u_top, v')`` at the best ``v' <= v``; the
    same along ``v``, and past both the corner ratio.
    """

    __slots__ = ("table", "surface", "scale", "du", "dv", "i0", "j0", "r_u_top", "r_v_top", "r_corner", "monotone")

    def __init__(self, surface: RatioSurface, scale: float, du: float, dv: float, first: tuple[int, int],
                 table: np.ndarray, r_u_top: np.ndarray, r_v_top: np.ndarray, monotone: bool = True) -> None:
        self.surface, self.scale, self.du, self.dv, self.monotone = surface, scale, du, dv, monotone
        self.i0, self.j0 = first
        self.table, self.r_u_top, self.r_v_top = table, r_u_top, r_v_top
        self.r_corner = float(r_u_top[-1])

    @staticmethod
    def arrays(surface: RatioSurface, scale: float, du: float, nu: int, dv: float, nv: int,
               first: tuple[int, int], monotone: bool = True) -> tuple:
        """(table, ratio along v past the box in u, ratio along u past the box in v): what `MonotoneGrid` keeps,
        cached on disk with the other tables. The running maximum starts at ``first`` (i0, j0): a point no model
        asks for (a decode of 0 sequences) does not lift the others. ``monotone=False``: the surface as fitted."""
        u = np.arange(nu, dtype=np.float64) * du
        v = np.arange(nv, dtype=np.float64) * dv
        uu, vv = np.meshgrid(u, v, indexing="ij")
        table = scale * surface(uu, vv)
        i0, j0 = first
        if monotone:
            np.maximum.accumulate(table[i0:, j0:], axis=0, out=table[i0:, j0:])
            np.maximum.accumulate(table[i0:, j0:], axis=1, out=table[i0:, j0:])
        r_u_top = surface.ratio(np.full(nv, u[-1]), v)
        r_v_top = surface.ratio(u, np.full(nu, v[-1]))
        return table, r_u_top, r_v_top

    def _base(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.scale * self.surface.base(u, v)

    def at(self, i: int, j: np.ndarray) -> np.ndarray:
        """Values at ``u = i x du`` and ``v = j x dv`` for each of ``j`` (``i >= i0``, each ``j >= j0``)."""
        t = self.table
        nu, nv = t.shape
        if not self.monotone:  # (the surface as fitted: Vidur's prices)
            if i < nu and (not j.size or j.max() < nv):
                return t[i, j]
            return self.scale * self.surface(np.full(j.shape, float(i) * self.du), j.astype(np.float64) * self.dv)
        out = np.empty(j.shape)
        inside = j < nv
        ji, jb = j[inside], j[~inside]
        if i < nu:
            out[inside] = t[i, ji]
            if jb.size:
                out[~inside] = np.maximum(t[i, -1], self._past_v(i + 1, jb))
            return out
        if not j.size:
            return out
        u = float(i) * self.du
        reach = nv if jb.size else int(ji.max()) + 1
        v = np.arange(self.j0, reach, dtype=np.float64) * self.dv
        along = np.full(reach, -np.inf)
        along[self.j0:] = np.maximum.accumulate(self._base(np.full(v.shape, u), v) * self.r_u_top[self.j0:reach])
        if ji.size:
            out[inside] = np.maximum(t[-1, ji], along[ji])
        if jb.size:
            vb = jb.astype(np.float64) * self.dv
            corner = self._base(np.full(vb.shape, u), vb) * self.r_corner
            out[~inside] = np.maximum(np.maximum(t[-1, -1], along[-1]), np.maximum(self._past_v(nu, jb), corner))
        return out

    def _past_v(self, rows: int, jb: np.ndarray) -> np.ndarray:
        """For each ``v = jb x dv`` past the box: the largest surface value over ``u = i0 .. rows-1`` (x du)."""
        u = np.arange(self.i0, rows, dtype=np.float64) * self.du
        vb = jb.astype(np.float64) * self.dv
        uu, vv = np.meshgrid(u, vb, indexing="ij")
        base = self._base(uu.ravel(), vv.ravel()).reshape(uu.shape)
        return (base * self.r_v_top[self.i0:rows, None]).max(axis=0)


#: The first grid points a model asks for: a prefill of at least 1 token at any KV level (0 included), a decode of
#: at least 1 sequence at KV level 1 or more (its KV counts the token being decoded).
PREFILL_FIRST = (0, 1)
DECODE_FIRST = (1, 1)


@dataclass(frozen=True)
class Tables:
    lin_list: list[float]
    kvsave_ms: np.ndarray | None
    prefill_rows: list[Sequence[float]]  # array('d') rows: made by a copy, indexed like lists
    decode_tab: np.ndarray
    decode_rows: list[list[float]]
    n_lin: int
    prefill: MonotoneGrid
    decode: MonotoneGrid


@lru_cache(maxsize=32)
def tables(
    op_items: tuple[tuple[str, Curve1D], ...],
    all_reduce: Curve1D | None,
    comm_const: float,
    prefill: RatioSurface,
    decode: RatioSurface,
    kv_save: Curve1D | None,
    scale: tuple[float, float],
    layers: int,
    max_tokens: int,
    max_batch: int,
    granularity: int,
    monotone: bool = True,
) -> Tables:
    """Every term tabulated (shared between equal configurations); ``scale`` is (prefill, decode) attention's;
    ``monotone``: each a running maximum."""
    # Keys hold the fitted objects themselves (identity-hashed, kept alive by this cache). On disk
    # the arrays are cached by the inputs' content (fit_cache); the row lists are made here.
    from .fit_cache import cached_by_content

    args = (op_items, all_reduce, comm_const, prefill, decode, kv_save, scale, layers, max_tokens, max_batch,
            granularity, monotone)
    lin, kvsave, pre, dec, n_max = cached_by_content(
        "vidur-tables", args, lambda: _table_arrays(*args), code=("vidur_tables.py",))
    pre_grid = MonotoneGrid(prefill, layers * scale[0], float(granularity), 1.0, PREFILL_FIRST, *pre, monotone)
    dec_grid = MonotoneGrid(decode, layers * scale[1], 1.0, float(granularity), DECODE_FIRST, *dec, monotone)
    dec_grid.table.setflags(write=False)
    return Tables(
        lin_list=lin.tolist(),
        kvsave_ms=kvsave,
        prefill_rows=[_float_row(row) for row in pre_grid.table],
        decode_tab=dec_grid.table,
        decode_rows=[row.tolist() for row in dec_grid.table],
        n_lin=n_max,
        prefill=pre_grid,
        decode=dec_grid,
    )


def _float_row(row: np.ndarray) -> array:
    """A row of floats for scalar lookups: an ``array('d')`` copy (no Python float per cell)."""
    out = array("d")
    out.frombytes(np.ascontiguousarray(row, dtype=np.float64).tobytes())
    return out


def _top(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else 0.0


def _table_arrays(
    op_items: tuple[tuple[str, Curve1D], ...],
    all_reduce: Curve1D | None,
    comm_const: float,
    prefill: RatioSurface,
    decode: RatioSurface,
    kv_save: Curve1D | None,
    scale: tuple[float, float],
    layers: int,
    max_tokens: int,
    max_batch: int,
    granularity: int,
    monotone: bool,
) -> tuple:
    """The tables as arrays, each a running maximum if ``monotone``: linear ops and KV save by token count (up to the KV-save
    profile's last point at least), prefill attention by (KV level, chunk) and decode attention by (batch, KV
    level), each over a box covering the profiled one."""
    g = granularity
    n_max = ceil_to(max(max_tokens, int(np.ceil(_top(kv_save.x))) if kv_save is not None else 0), 8)
    n = np.arange(n_max + 1, dtype=np.float64)
    lin = linear_ms(n, tuple(c for _, c in op_items), all_reduce, comm_const, layers)
    if monotone:
        lin[8::8] = np.maximum.accumulate(lin[8::8])  # (asked for at multiples of 8 only: the rest never lift them)
    kvsave = None
    if kv_save is not None:
        kvsave = layers * kv_save(n)
        kvsave[0] = 0.0
        if monotone:
            kvsave = np.maximum.accumulate(kvsave)
    kv_top = max(max_tokens, int(np.ceil(max(_top(prefill.u), _top(decode.v)))))
    levels = ceil_to(kv_top, g) // g + 1
    chunks = max(max_tokens, int(np.ceil(_top(prefill.v)))) + 1
    batches = max(max_batch, int(np.ceil(_top(decode.u)))) + 1
    pre = MonotoneGrid.arrays(prefill, layers * scale[0], float(g), levels, 1.0, chunks, PREFILL_FIRST, monotone)
    dec = MonotoneGrid.arrays(decode, layers * scale[1], 1.0, batches, float(g), levels, DECODE_FIRST, monotone)
    return lin, kvsave, pre, dec, n_max


def running_max_past(top: float, values: Callable[[np.ndarray], np.ndarray], start: float, step: float,
                     count: int, monotone: bool = True) -> np.ndarray:
    """``count`` values of a fitted curve from ``start`` on in steps of ``step``, as their running maximum and at
    least ``top`` (the table's last value): the curve past its table (as fitted if not ``monotone``)."""
    x = start + step * np.arange(count, dtype=np.float64)
    return np.maximum.accumulate(np.maximum(values(x), top)) if monotone else values(x)
