"""A latency model fitted from our own live iteration measurements.

The live worker's ``controlplane profile`` command times real engine iterations and
calls :func:`write_profile`; the simulator loads the file with
:meth:`MeasuredProfileModel.from_file`. File format (JSON, see docs/latency-models.md)::

    {"format": "controlplane-profile/1", "model": "...", "device": "...",
     "precision": "fp16", "compiled": false, "tensor_parallel": 1,
     "rows": [{"num_prefill_tokens": 512, "num_prefill_seqs": 1, "num_decode_seqs": 8,
               "sum_decode_context": 4100, "sum_prefill_context": 0,
               "iteration_s": 0.0421}, ...]}

The fit is a non-negative linear model on physically motivated features (fixed cost,
prefill tokens, their square for attention, decode sequences, total decode context,
prefill tokens x prefill context, prefill sequences, and whether the iteration both prefills and
decodes - our live engine runs such an iteration as two forwards, each with its fixed cost),
weighted for relative error so both 5 ms decode steps and 2 s prefills are fitted well, and by
each row's ``samples`` (how many timed iterations the row averages; default 1). The relative
error is taken against the fit's own prediction after a first pass (`_relative_fit`): against the
measured times alone, noisy timings are fitted low.

Engines that pad a batch to its longest member (our live ``CausalLMBackend``; profile metadata
``"batching": "padded"``) compute what the padding costs: there the prefill tokens are
``sequences x the longest prompt``, the attention term is per sequence (``sequences x longest²``)
and the decode context is ``sequences x the longest KV``. Rows may then carry the padded counts
(``padded_prefill_tokens``, ``padded_decode_context``); rows without them (uniform batches, as a
profiling grid times) are their own padded counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

from .base import IterationShape, LatencyModel, decode_run_args
from .measured_box import ProfiledBox
from controlplane.hardware.profile_format import (
    PROFILE_FORMAT,
    ROW_FIELDS,
    WEIGHT_FIELD,
    ProfileWarning,
    check_kinds,
    normalise_row,
    read_profile,
    write_profile,
)

#: The fewest rows `MeasuredProfileModel.fit` takes (a profile of one or two timings is refused, naming its file).
MIN_ROWS = 3

__all__ = ["PROFILE_FORMAT", "ROW_FIELDS", "FEATURES", "FarRowsWarning", "MeasuredProfileModel", "write_profile", "read_profile"]


FEATURES: tuple[str, ...] = (
    "base", "prefill_tokens", "prefill_tokens_sq", "decode_seqs", "sum_decode_context", "prefill_tokens_x_context",
    "prefill_seqs",  # a prompt's own fixed cost (its cache set-up, first sample), apart from its tokens
    "mixed",  # an iteration that prefills and decodes: engines that run them as two forwards pay twice
)
#: Passes of the relative-error fit weighted by its own prediction after the first (`_relative_fit`).
REWEIGHT_ROUNDS = 2
#: Per-batch-size corrections (`_batch_factors`) count as this many iterations at ratio 1.
FACTOR_PRIOR_SAMPLES = 4.0
#: A row measured at more than this many times its fitted time, or less than its inverse, is far from the fit: a
#: stall, a clock glitch, a 0 s timing. It is left out of the per-batch-size factors, and the fit warns, naming it.
OUTLIER_RATIO = 3.0
# Feature scales keep the solver well conditioned; coefficients are stored unscaled.
_SCALE = np.array([1.0, 1e3, 1e6, 1e2, 1e5, 1e6, 1e1, 1.0])


def _features(p_tok: float, d_seqs: float, d_ctx: float, p_ctx: float, p_seqs: float = 0.0) -> list[float]:
    return [1.0, p_tok, p_tok * p_tok, d_seqs, d_ctx, p_tok * p_ctx, p_seqs, 1.0 if p_seqs and d_seqs else 0.0]


def _row_features(r: Mapping[str, float], padded: bool) -> list[float]:
    n = r["num_prefill_seqs"]
    if not padded:
        return _features(r["num_prefill_tokens"], r["num_decode_seqs"], r["sum_decode_context"], r["sum_prefill_context"], n)
    p = r.get("padded_prefill_tokens", r["num_prefill_tokens"])
    d = r.get("padded_decode_context", r["sum_decode_context"])
    nd = r["num_decode_seqs"]
    return [1.0, p, p * p / n if n else 0.0, nd, d, r["num_prefill_tokens"] * r["sum_prefill_context"], n,
            1.0 if n and nd else 0.0]


def _batch_factors(sizes: np.ndarray, ratios: np.ndarray, samples: np.ndarray) -> tuple[float, ...]:
    """Measured / linear-fit ratio by batch size, indexed by size (0 unused), up to the largest measured.

    The linear features cannot follow every engine's step from one sequence to a few (a CPU
    matrix-vector product becoming a matrix product, a GPU kernel changing tiles), so the fit is
    scaled per batch size by the mean ratio of its rows (weighted by ``samples``), shrunk towards 1
    by `FACTOR_PRIOR_SAMPLES` so a size timed only a few times stays near the linear fit; sizes
    between measured ones interpolate in log size, sizes beyond the largest take its ratio. Rows far
    from the fit (`OUTLIER_RATIO`) are left out: one stalled 16-token prefill at 0.5 s (10x its
    neighbours) doubled every one-prompt prefill's price.
    """
    known = sorted({int(k) for k in sizes if k > 0})
    if not known:
        return ()
    means = []
    usable = (ratios <= OUTLIER_RATIO) & (ratios >= 1.0 / OUTLIER_RATIO)
    for k in known:
        at = (sizes == k) & usable
        w = samples[at]
        means.append(float((np.dot(w, ratios[at]) + FACTOR_PRIOR_SAMPLES) / (w.sum() + FACTOR_PRIOR_SAMPLES)))
    table = np.interp(np.log(np.arange(1, known[-1] + 1)), np.log(known), means)
    return (1.0, *(float(x) for x in table))


def _relative_fit(X: np.ndarray, y: np.ndarray, samples: np.ndarray, rounds: int | None = None) -> np.ndarray:
    """Non-negative coefficients minimising the relative error, each row weighted by ``samples``.

    Relative error weighs a row by 1 / its time squared. Weighing by the *measured* time (the first
    pass) favours rows measured fast: of two timings of one shape, the slower counts less, so on
    noisy timings (a shared host, a run whose machine slowed down) the fit comes out low - by about
    the timings' relative variance, 6-9% on this project's busy-host runs, where the iterations the
    fit was made from summed to 0.91-0.95 of their measured time. The later passes weigh by the
    fit's own prediction instead (iteratively reweighted least squares), which a slow or fast
    timing does not move.

    A row timed at 0 s has no relative error and is left out; the first pass weighs a row timed near
    0 s as if it took a quarter of the profile's 10th-percentile time (`_first_pass_floor`): by its
    own time, a 1 us glitch among 20 ms iterations outweighed the rest and priced every iteration
    near 0 s.
    """
    rounds = REWEIGHT_ROUNDS if rounds is None else rounds
    if (y > 0).any():  # (all at 0 s: a fit pricing 0 s, which `check_kinds` and calibrations refuse)
        samples = np.where(y > 0, samples, 0.0)
    w = samples / np.maximum(y, _first_pass_floor(y)) ** 2
    coef = np.zeros(X.shape[1])
    for i in range(rounds + 1):
        reg = LinearRegression(fit_intercept=False, positive=True)
        reg.fit(X / _SCALE, y, sample_weight=w)
        coef = np.maximum(reg.coef_, 0.0) / _SCALE
        if i < rounds:
            pred = X @ coef
            # a row the fit prices near zero must not take all the weight: floor at a quarter of its time
            w = samples / np.maximum(np.maximum(pred, 0.25 * y), 1e-6) ** 2
    return coef


def _first_pass_floor(y: np.ndarray) -> float:
    """The least time the first pass of `_relative_fit` weighs a row by: a quarter of the 10th percentile of the
    timed rows (at least 1 us)."""
    timed = y[y > 0]
    return max(1e-6, 0.25 * float(np.percentile(timed, 10))) if timed.size else 1e-6


class FarRowsWarning(ProfileWarning):
    """A profile's rows measured far from its fit (`OUTLIER_RATIO`). ``one_line``: the command line shows it as
    one ``warning:`` line of its own, once per text (`controlplane.cli.shown_warnings`), not as Python's warning
    with its file and source line at every fit of the same profile (a replay's config check and its run)."""

    one_line = True


def _far_rows_note(y: np.ndarray, ratio: np.ndarray, source: str) -> str | None:
    """The text naming the rows measured far from the fit (`OUTLIER_RATIO`), the first few with their times; None
    when there are none."""
    far = np.flatnonzero((ratio > OUTLIER_RATIO) | (ratio < 1.0 / OUTLIER_RATIO))
    if not far.size:
        return None
    named = ", ".join(f"row {i + 1} ({y[i]:.4g} s, {ratio[i]:.2g}x)" for i in far[:5])
    more = f" and {far.size - 5} more" if far.size > 5 else ""
    return (f"{source}: {far.size} row(s) measured far from the fit (measured / fitted below "
            f"1/{OUTLIER_RATIO:g} or above {OUTLIER_RATIO:g}; left out of the per-batch-size factors; rows numbered "
            f"from 1): {named}{more}")


class MeasuredProfileModel(LatencyModel):
    """Non-negative linear fit of measured iteration times."""

    name = "measured"

    def __init__(self, coef: Sequence[float], meta: Mapping[str, Any] | None = None) -> None:
        c = [float(x) for x in coef]
        if len(c) == len(FEATURES) - 1:  # coefficients from before the ``mixed`` feature
            c.append(0.0)
        if len(c) != len(FEATURES) or any(not math.isfinite(x) or x < 0 for x in c):
            raise ValueError(f"coef must be {len(FEATURES)} finite non-negative numbers ({list(FEATURES)})")
        self.coef = tuple(c)
        self.meta = dict(meta or {})
        self.padded = self.meta.get("batching") == "padded"
        # A prefill that starts on a worker idle for at least `idle_gap_s` costs this much more (the live path's
        # wake-up, `controlplane.live.idle_start`); the simulator's driver adds it. 0: not measured.
        self.idle_prefill_extra_s = float(self.meta.get("idle_prefill_extra_s") or 0.0)
        self.idle_gap_s = float(self.meta.get("idle_gap_s") or 0.1)
        self.fit_stats: dict[str, float] = {}
        # The rows measured far from the fit, in words (`_far_rows_note`; `fit` warns it too): None when none were.
        self.far_rows_note: str | None = None
        # Each row's measured and fitted time (`fit`; `measured_checks` judges the fit by them); empty: not fitted.
        self.row_times: np.ndarray = np.zeros(0)
        self.row_fitted: np.ndarray = np.zeros(0)
        # The largest counts the rows timed, and the iterations priced past them (`measured_box`); None: not fitted.
        self.box: ProfiledBox | None = None
        # Measured / linear ratio by batch size (index = sequences; see `fit`): empty = no correction.
        self.decode_factors: tuple[float, ...] = ()
        self.prefill_factors: tuple[float, ...] = ()

    def _factor(self, num_prefill: int, num_decode: int) -> float:
        if num_prefill and num_decode:
            return 1.0
        table, k = (self.prefill_factors, num_prefill) if num_prefill else (self.decode_factors, num_decode)
        if not table:
            return 1.0
        return table[k] if k < len(table) else table[-1]

    def _price(self, base: float, prefill: float, decode: float, mixed: float, n: int, nd: int) -> float:
        """An iteration's time from its linear parts, scaled per batch size. A mixed iteration costs at least what
        its prefills alone and its decodes alone cost: a one-prompt prefill's factor (say 1.19) is not the mixed
        iteration's, and past the grid a 2048-token prefill cost 2234.6 ms alone, 1898.8 ms with a decode added."""
        if n and nd:
            return max(base + prefill + decode + mixed, (base + prefill) * self._factor(n, 0),
                       (base + decode) * self._factor(0, nd))
        return (base + prefill + decode) * self._factor(n, nd)

    @classmethod
    def fit(cls, rows: Iterable[Mapping[str, Any] | Sequence[float]], meta: Mapping[str, Any] | None = None) -> MeasuredProfileModel:
        clean = [normalise_row(r, i) for i, r in enumerate(rows)]
        if len(clean) < MIN_ROWS:
            raise ValueError(f"need at least {MIN_ROWS} rows to fit, got {len(clean)} (profile more shapes: "
                             "`controlplane profile` times a grid of them)")
        padded = (meta or {}).get("batching") == "padded"
        X = np.array([_row_features(r, padded) for r in clean])
        y = np.array([r["iteration_s"] for r in clean])
        samples = np.array([r.get(WEIGHT_FIELD, 1.0) for r in clean])
        coef = _relative_fit(X, y, samples)
        model = cls(coef, meta)
        pred = (X * np.asarray(model.coef)).sum(axis=1)
        n_pre = np.array([r["num_prefill_seqs"] for r in clean])
        n_dec = np.array([r["num_decode_seqs"] for r in clean])
        ratio = y / np.maximum(pred, 1e-12)
        model.far_rows_note = _far_rows_note(y, ratio, str((meta or {}).get("path", "profile")))
        if model.far_rows_note is not None:
            warnings.warn(FarRowsWarning(model.far_rows_note), stacklevel=3)
        model.decode_factors = _batch_factors(n_dec[n_pre == 0], ratio[n_pre == 0], samples[n_pre == 0])
        model.prefill_factors = _batch_factors(n_pre[n_dec == 0], ratio[n_dec == 0], samples[n_dec == 0])
        c = np.asarray(model.coef)
        pre_part = X[:, [1, 2, 5, 6]] @ c[[1, 2, 5, 6]]
        dec_part = X[:, [3, 4]] @ c[[3, 4]]
        pred = np.array([model._price(c[0], p, d, c[7] * m, int(a), int(b))
                         for p, d, m, a, b in zip(pre_part, dec_part, X[:, 7], n_pre, n_dec)])
        rel = np.abs(pred - y) / np.maximum(y, 1e-12)
        model.fit_stats = {"rows": float(len(y)), "median_rel_err": float(np.median(rel)),
                           "p90_rel_err": float(np.percentile(rel, 90)), "max_rel_err": float(rel.max())}
        model.row_times, model.row_fitted = y, pred
        model.box = ProfiledBox(clean, (meta or {}).get("path"))
        return model

    @classmethod
    def from_file(cls, path: str | Path) -> MeasuredProfileModel:
        rows, meta = read_profile(path)
        check_kinds(rows, str(path))  # (the simulator prices both kinds; validated once, here, not per iteration)
        try:
            model = cls.fit(rows, {**meta, "path": str(path)})
        except ValueError as exc:  # (a profile too small to fit: the error names the file, as read_profile's do)
            raise ValueError(f"{path}: {exc}") from None
        from .measured_checks import profile_notes

        # (units, monotonicity, kinds no row times, the fit's error: said, not refused; `ProfileWarning` lines)
        for note in profile_notes(rows, model.row_times, model.row_fitted, str(path)):
            warnings.warn(ProfileWarning(note), stacklevel=2)
        return model

    def iteration_s(self, shape: IterationShape) -> float:
        return self._iteration_s(shape, self.box)

    def estimate_s(self, shape: IterationShape) -> float:
        """`iteration_s` of a shape the run does not run (the planner's estimate): not counted in `box`."""
        return self._iteration_s(shape, None)

    def _iteration_s(self, shape: IterationShape, box: ProfiledBox | None) -> float:
        nd = len(shape.decode_context_tokens)
        p_tok = int(sum(shape.prefill_chunk_tokens)) if len(shape.prefill_chunk_tokens) else 0
        if p_tok == 0 and nd == 0:
            return 0.0
        p_ctx = int(sum(shape.prefill_context_tokens)) if len(shape.prefill_context_tokens) else 0
        d_ctx = int(sum(shape.decode_context_tokens)) if nd else 0
        c = self.coef
        n = len(shape.prefill_chunk_tokens)
        if box is not None:
            box.note(p_tok, n, nd, d_ctx, p_ctx)
        if self.padded:
            w = float(max(shape.prefill_chunk_tokens)) if n else 0.0
            d_pad = nd * float(max(shape.decode_context_tokens)) if nd else 0.0
            prefill = c[1] * n * w + c[2] * n * w * w + c[5] * p_tok * p_ctx + c[6] * n
            decode = c[3] * nd + c[4] * d_pad
        else:
            prefill = c[1] * p_tok + c[2] * p_tok * p_tok + c[5] * p_tok * p_ctx + c[6] * n
            decode = c[3] * nd + c[4] * d_ctx
        return self._price(c[0], prefill, decode, c[7] if n and nd else 0.0, n, nd)

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        b = ctx.size
        if b == 0 or n == 0:
            return np.zeros(n)
        c = self.coef
        if self.box is not None:
            self.box.note_decode_run(b, int(ctx.sum()), n, b)  # (the rows' sum_decode_context: unpadded)
        if self.padded:
            d_ctx = b * (float(ctx.max()) + np.arange(n, dtype=np.float64))
        else:
            d_ctx = float(ctx.sum()) + b * np.arange(n, dtype=np.float64)
        return (c[0] * 1.0 + c[1] * 0.0 + c[2] * 0.0 + c[3] * float(b) + c[4] * d_ctx + c[5] * 0.0) * self._factor(0, b)

    def __repr__(self) -> str:
        return f"MeasuredProfileModel(model={self.meta.get('model')!r}, device={self.meta.get('device')!r}, coef={self.coef})"
