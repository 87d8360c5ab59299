"""What a measured profile's load checks and says (``warning:`` lines, `ProfileWarning`), without refusing it: how far
its fit is from its own rows, times that look like the wrong unit, rows that cost less for more work, and a kind of
iteration no row times. The bounds are documented in docs/latency-models.md (Judging a measured profile).

Rows are named 1-based (``row 7`` is the file's 7th row, ``rows[6]``), as `read_profile`'s errors name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["FIT_P90_WARN", "FIT_ROW_WARN", "MAX_DECODE_STEP_S", "MAX_PREFILL_TOKENS_PER_S", "MIN_DECODE_STEP_S",
           "MIN_PREFILL_TOKENS_PER_S", "MONOTONE_TOLERANCE", "describe_row", "fit_errors", "fit_note",
           "profile_notes"]

#: The fit is worth a warning when the 90th percentile of |fitted - measured| / measured over its rows is above
#: this (a steady GPU profile fits in 1-3%)...
FIT_P90_WARN = 0.05
#: ... or when any one row is off by more than this.
FIT_ROW_WARN = 0.25
#: A decode step of one sequence takes at least this long on any GPU (a forward pass through every layer: kernel
#: launches alone take tens of microseconds); faster is a profile written in the wrong unit (ms / 1e6).
MIN_DECODE_STEP_S = 100e-6
#: ... and at most this long (a 70B model on one GPU steps in ~50-100 ms); slower is a profile in ms written as s,
#: or a CPU profile of a large model (then the warning can be ignored).
MAX_DECODE_STEP_S = 1.0
#: A prefill row faster than this many tokens a second is beyond any GPU (an H100 prefills a 7B model at ~20-40k
#: tokens/s, a 125M model at well under 5M); slower than the second bound (prefills of at least 64 tokens) is a
#: profile in ms written as s, or a CPU running a large model.
MAX_PREFILL_TOKENS_PER_S = 5e6
MIN_PREFILL_TOKENS_PER_S = 10.0
#: A row doing at least as much work as another (no fewer tokens, sequences or context, of the same kind of
#: iteration) timed more than this fraction below it breaks monotonicity; less is timing noise.
MONOTONE_TOLERANCE = 0.10
#: The rows a note names at most.
NAMED = 3


def describe_row(r: Mapping[str, float]) -> str:
    """A row's shape in words: ``prefill 128 tokens (1 seq)``, ``decode 16 seqs, 8,192 context``, both for a mixed
    one."""
    parts = []
    if r["num_prefill_seqs"]:
        ctx = f" over {int(r['sum_prefill_context']):,} context" if r["sum_prefill_context"] else ""
        n = int(r["num_prefill_seqs"])
        parts.append(f"prefill {int(r['num_prefill_tokens']):,} tokens ({n} seq{'s' if n > 1 else ''}){ctx}")
    if r["num_decode_seqs"]:
        nd = int(r["num_decode_seqs"])
        parts.append(f"decode {nd} seq{'s' if nd > 1 else ''}, {int(r['sum_decode_context']):,} context")
    return " + ".join(parts)


def _ms(t: float) -> str:
    """A time in the unit that reads best: ``1.5 s``, ``21.2 ms``, ``20.8 µs``."""
    return f"{t:.3g} s" if t >= 1 else f"{t * 1e3:.3g} ms" if t >= 1e-3 else f"{t * 1e6:.3g} µs"


def fit_errors(measured: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Each row's signed relative error of the fit, (fitted - measured) / measured (0 for a row timed at 0 s)."""
    return np.where(measured > 0, (fitted - measured) / np.maximum(measured, 1e-12), 0.0)


def fit_note(rows: Sequence[Mapping[str, float]], measured: np.ndarray, fitted: np.ndarray, source: str,
             force: bool = False) -> str | None:
    """The fit's error over its rows with the worst ones named (row, shape, measured and fitted); None when it is
    within `FIT_P90_WARN` at the 90th percentile and `FIT_ROW_WARN` on every row (unless ``force``)."""
    rel = fit_errors(measured, fitted)
    err = np.abs(rel)
    p50, p90, worst = float(np.median(err)), float(np.percentile(err, 90)), float(err.max())
    if not force and p90 <= FIT_P90_WARN and worst <= FIT_ROW_WARN:
        return None
    named = ", ".join(f"row {i + 1} ({describe_row(rows[i])}: measured {_ms(measured[i])}, fitted {_ms(fitted[i])}, "
                      f"{rel[i]:+.0%})" for i in np.argsort(-err, kind="stable")[:NAMED])
    return (f"{source}: the measured model (a linear fit, not an interpolation of the rows) is off its own rows by "
            f"{p50:.1%} at the median, {p90:.1%} at p90 (warned above {FIT_P90_WARN:.0%} at p90 or "
            f"{FIT_ROW_WARN:.0%} on a row); worst (rows numbered from 1): {named}; the run prices such shapes as "
            "fitted (see docs/latency-models.md#judging-a-measured-profile)")


def _unit_notes(rows: Sequence[Mapping[str, float]], source: str) -> list[str]:
    notes = []
    decodes = [(r["num_decode_seqs"], r["iteration_s"], i) for i, r in enumerate(rows)
               if r["num_decode_seqs"] and not r["num_prefill_seqs"] and r["iteration_s"] > 0]
    if decodes:
        least = min(b for b, _, _ in decodes)
        t, i = min((t, i) for b, t, i in decodes if b == least)
        if least == 1 and t < MIN_DECODE_STEP_S:
            notes.append(f"{source}: row {i + 1} times a decode step of one sequence at {t * 1e6:.3g} µs, faster than "
                         f"any GPU steps a model (at least {MIN_DECODE_STEP_S * 1e6:g} µs): iteration_s is in seconds "
                         "(20.8 ms is 0.0208); was the profile converted from ms with 1e-6?")
        slowest_least = max(t for b, t, _ in decodes if b == least)
        if t > MAX_DECODE_STEP_S:
            notes.append(f"{source}: row {i + 1} times a decode step of {'one sequence' if least == 1 else f'{least} sequences'} at {t:.3g} s, slower than a "
                         f"GPU steps a model (at most {MAX_DECODE_STEP_S:g} s; {slowest_least:.3g} s the slowest): "
                         "iteration_s is in seconds (20.8 ms is 0.0208), not ms")
    prefills = [(r["num_prefill_tokens"] / r["iteration_s"], r, i) for i, r in enumerate(rows)
                if r["num_prefill_seqs"] and not r["num_decode_seqs"] and r["iteration_s"] > 0]
    if prefills:
        rate, r, i = max(prefills, key=lambda x: x[0])
        if rate > MAX_PREFILL_TOKENS_PER_S:
            notes.append(f"{source}: row {i + 1} prefills {rate:,.0f} tokens/s ({describe_row(r)} in "
                         f"{r['iteration_s'] * 1e6:.3g} µs), beyond any GPU (at most {MAX_PREFILL_TOKENS_PER_S:,.0f}): "
                         "iteration_s is in seconds")
        long = [x for x in prefills if x[1]["num_prefill_tokens"] >= 64]
        if long:
            rate, r, i = min(long, key=lambda x: x[0])
            if rate < MIN_PREFILL_TOKENS_PER_S:
                notes.append(f"{source}: row {i + 1} prefills {rate:.3g} tokens/s ({describe_row(r)} in "
                             f"{r['iteration_s']:.3g} s), slower than a GPU prefills (at least "
                             f"{MIN_PREFILL_TOKENS_PER_S:g}): iteration_s is in seconds, not ms")
    return notes


def _kind(r: Mapping[str, float]) -> int:
    return (1 if r["num_prefill_seqs"] else 0) + (2 if r["num_decode_seqs"] else 0)


_COUNTS = ("num_prefill_tokens", "num_prefill_seqs", "num_decode_seqs", "sum_decode_context", "sum_prefill_context")


def _monotone_note(rows: Sequence[Mapping[str, float]], source: str, far: np.ndarray) -> str | None:
    """The rows timed more than `MONOTONE_TOLERANCE` below a row of their kind that does no more work in any count
    (fewer or as many tokens, sequences, context), each with the row it undercuts most. Rows ``far`` from the fit
    (a stall: `FarRowsWarning` names them) are left out: one stalled row undercut every row above it."""
    X = np.array([[r[k] for k in _COUNTS] for r in rows], dtype=np.float64)
    t = np.array([r["iteration_s"] for r in rows])
    kind = np.where(far, -1, np.array([_kind(r) for r in rows]))
    breaks: list[tuple[float, int, int]] = []  # (how far below, the row, the row it undercuts)
    for a in np.flatnonzero(~far):
        more = (X[a] >= X).all(axis=1) & (X[a] > X).any(axis=1) & (kind == kind[a])
        cheaper = more & (t[a] < t * (1.0 - MONOTONE_TOLERANCE))
        if cheaper.any():
            b = int(np.argmax(np.where(cheaper, t, -1.0)))
            breaks.append((1.0 - t[a] / t[b], int(a), b))
    if not breaks:
        return None
    breaks.sort(reverse=True)
    named = "; ".join(f"row {a + 1} ({describe_row(rows[a])}: {_ms(t[a])}) {gap:.0%} below row {b + 1} "
                      f"({describe_row(rows[b])}: {_ms(t[b])})" for gap, a, b in breaks[:NAMED])
    more = f"; and {len(breaks) - NAMED} more" if len(breaks) > NAMED else ""
    return (f"{source}: {len(breaks)} row(s) timed more than {MONOTONE_TOLERANCE:.0%} below a row doing less work "
            f"(no more tokens, sequences or context, the same kind of iteration), which the fit cannot follow "
            f"(rows numbered from 1): {named}{more}; a mislabeled row or a disturbed timing?")


def _coverage_notes(rows: Sequence[Mapping[str, float]], source: str) -> list[str]:
    notes = []
    if not any(r["sum_prefill_context"] > 0 for r in rows):
        notes.append(f"{source}: no row prefills over a cached context (sum_prefill_context > 0): a chunked prefill's "
                     "later chunks and prefix-cache hits get no attention cost over their context (priced as a "
                     "prefill from scratch); profile such shapes if the run chunks prefills or hits a prefix cache")
    if not any(r["sum_decode_context"] > 0 for r in rows if r["num_decode_seqs"]):
        notes.append(f"{source}: no decode row holds any context (sum_decode_context > 0): a decode step costs the "
                     "same whatever its KV length")
    return notes


def profile_notes(rows: Sequence[Mapping[str, float]], measured: np.ndarray, fitted: np.ndarray,
                  source: str) -> list[str]:
    """Everything `MeasuredProfileModel.from_file` warns about a profile (each a ``warning:`` line): units, rows
    breaking monotonicity, kinds no row times, the fit's error on its rows."""
    from .measured import OUTLIER_RATIO

    ratio = measured / np.maximum(fitted, 1e-12)
    far = (ratio > OUTLIER_RATIO) | (ratio < 1.0 / OUTLIER_RATIO)
    notes: list[Any] = [*_unit_notes(rows, source), _monotone_note(rows, source, far), *_coverage_notes(rows, source),
                        fit_note(rows, measured, fitted, source)]
    return [n for n in notes if n]
