"""The `controlplane-profile/1` file format shared by the live profiler and the measured model:
its fields, one row's validation, and reading and writing a file.

Kept free of heavy imports: live workers write profiles without loading scikit-learn.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.output_file import replaced_on_success

__all__ = ["BATCHING", "KINDS", "MAX_ITERATION_S", "PADDED_FIELDS", "PROFILE_FORMAT", "ROW_FIELDS", "WEIGHT_FIELD",
           "ProfileWarning", "check_kinds", "check_meta", "normalise_row", "read_profile", "unknown_row_keys",
           "write_profile"]

PROFILE_FORMAT = "controlplane-profile/1"
#: One row per timed iteration; contexts are KV lengths before the iteration.
ROW_FIELDS: tuple[str, ...] = (
    "num_prefill_tokens",
    "num_prefill_seqs",
    "num_decode_seqs",
    "sum_decode_context",
    "sum_prefill_context",
    "iteration_s",
)
#: Optional row fields of padded engines: prefill tokens and decode KV entries computed, padding included.
PADDED_FIELDS: tuple[str, ...] = ("padded_prefill_tokens", "padded_decode_context")
#: Optional row field: how many timed iterations the row's ``iteration_s`` averages (default 1).
#: The measured model weights its fit by it, so a mean over 500 iterations of a common shape
#: counts for more than one timing of a rare one.
WEIGHT_FIELD = "samples"


#: The longest ``iteration_s`` a row may give (an hour): a longer time is a unit or clock error, not an iteration
#: (``1e300`` overflowed the measured model's fit).
MAX_ITERATION_S = 3600.0

#: What a profile's ``batching`` says: ``padded`` (the engine pads a batch to its longest member), ``unpadded``
#: (the default when it is absent).
BATCHING = ("padded", "unpadded")


def _row(i: int) -> str:
    """Row ``i`` (0-based, as Python counts) in an error: ``row 7 (1-based)`` is the file's 7th row, ``rows[6]``."""
    return f"row {i + 1} (1-based)"


class ProfileWarning(RuntimeWarning):
    """Something of a profile worth saying that does not make it unusable (unknown row keys, a fit far from its
    rows, a time in the wrong unit). ``one_line``: the command line shows it as one ``warning:`` line, once per
    text (`controlplane.cli.shown_warnings`)."""

    one_line = True


def _number(value: Any, i: int, key: str) -> float:
    """A row's value as a float: a number (JSON's), not a string or a boolean (``"0.01"``, ``true``: accepted as
    0.01 and 1 before)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{_row(i)}: {key}={value!r} must be a number")
    return float(value)


#: A row's sequence counts: whole in every row, a mean row's too (its iterations share them).
SEQ_FIELDS = ("num_prefill_seqs", "num_decode_seqs")


def _count(value: Any, i: int, key: str, mean: bool) -> int:
    """A row's count: a finite, non-negative whole number. A ``mean`` row (one with ``samples``: the mean of
    iterations of one shape, whose token and context counts may differ a little) has its token and context
    counts rounded; a fraction anywhere else is refused, by `write_profile` as by `read_profile` (1.5
    sequences was written as 1, in a file that reading it back accepted, unlike the row given)."""
    f = _number(value, i, key)
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"{_row(i)}: {key}={value!r} must be a finite non-negative number")
    if f == int(f):
        return int(f)
    if mean and key not in SEQ_FIELDS:
        return round(f)
    hint = "" if key in SEQ_FIELDS else f" (a row averaging iterations says how many in {WEIGHT_FIELD!r})"
    raise ValueError(f"{_row(i)}: {key}={value!r} must be a whole number{hint}")


def normalise_row(row: Mapping[str, Any] | Sequence[float], i: int) -> dict[str, float]:
    """One profile row checked and typed (counts as ints, whole: `_count`); ``i`` names it in the error."""
    if isinstance(row, Mapping):
        missing = [k for k in ROW_FIELDS if k not in row]
        if missing:
            raise ValueError(f"{_row(i)}: missing {missing}; a row needs {list(ROW_FIELDS)}")
        vals = {k: row[k] for k in ROW_FIELDS}
    else:
        if len(row) != len(ROW_FIELDS):
            raise ValueError(f"{_row(i)}: expected {len(ROW_FIELDS)} values {list(ROW_FIELDS)}, got {len(row)}")
        vals = dict(zip(ROW_FIELDS, row))
    out: dict[str, float] = {}
    mean = isinstance(row, Mapping) and WEIGHT_FIELD in row
    for k, v in vals.items():
        if k != "iteration_s":
            out[k] = _count(v, i, k, mean)
            continue
        f = _number(v, i, k)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"{_row(i)}: {k}={v!r} must be a finite non-negative number")
        if f > MAX_ITERATION_S:
            raise ValueError(f"{_row(i)}: {k}={v!r} is longer than an iteration can take ({MAX_ITERATION_S:g} s): "
                             "iteration_s is in seconds")
        out[k] = f
    if isinstance(row, Mapping):
        for k in PADDED_FIELDS:
            if k in row:
                out[k] = _count(row[k], i, k, mean)
        if WEIGHT_FIELD in row:
            f = _number(row[WEIGHT_FIELD], i, WEIGHT_FIELD)
            if not math.isfinite(f) or f <= 0:
                raise ValueError(f"{_row(i)}: {WEIGHT_FIELD}={row[WEIGHT_FIELD]!r} must be a finite positive number")
            out[WEIGHT_FIELD] = f
    if out["num_prefill_seqs"] == 0 and out["num_prefill_tokens"] > 0:
        raise ValueError(f"{_row(i)}: prefill tokens without prefill sequences")
    if out["num_prefill_tokens"] + out["num_decode_seqs"] == 0:
        raise ValueError(f"{_row(i)}: empty iteration")
    _check_consistent(out, i)
    return out


def _check_consistent(row: Mapping[str, float], i: int) -> None:
    """A row's counts agree: a context needs sequences to hold it, and padding only adds to what a batch computes
    (``sum_decode_context: 500`` with no decoding sequence was fitted as if it cost something)."""
    for ctx, seqs in (("sum_decode_context", "num_decode_seqs"), ("sum_prefill_context", "num_prefill_seqs")):
        if row[ctx] > 0 and row[seqs] == 0:
            raise ValueError(f"{_row(i)}: {ctx}={row[ctx]!r} with {seqs}=0 (a context needs sequences holding it)")
    for padded, plain in (("padded_prefill_tokens", "num_prefill_tokens"), ("padded_decode_context", "sum_decode_context")):
        if padded in row and row[padded] < row[plain]:
            raise ValueError(f"{_row(i)}: {padded}={row[padded]!r} is below {plain}={row[plain]!r} (padding only adds)")


#: The kinds of iteration a profile must have timed to price them: rows that prefill (mixed ones included), rows
#: that decode.
KINDS = ("prefill", "decode")


def check_kinds(rows: Sequence[Mapping[str, Any]], source: str, kinds: Iterable[str] = KINDS) -> None:
    """A ValueError naming ``source`` (the file) unless ``rows`` time each of ``kinds`` (`KINDS`) in a positive
    time: a fit on decode rows alone prices a prefill at a decode step's cost, one on all-zero times at 0 s."""
    if rows and all(r["iteration_s"] == 0 for r in rows):
        raise ValueError(f"{source}: every row's iteration_s is 0: the profile would price every iteration at 0 s")
    has = {"prefill": lambda r: r["num_prefill_seqs"] > 0, "decode": lambda r: r["num_decode_seqs"] > 0}
    for kind in kinds:
        timed = [r for r in rows if has[kind](r)]
        if not timed:
            raise ValueError(f"{source}: no {kind} rows (num_{kind}_seqs > 0): the profile cannot price {kind} "
                             f"iterations (profile a grid with both prefills and decodes)")
        if all(r["iteration_s"] == 0 for r in timed):
            raise ValueError(f"{source}: every {kind} row's iteration_s is 0: the profile would price {kind} "
                             "iterations at 0 s")


def write_profile(path: str | Path, rows: Iterable[Mapping[str, Any] | Sequence[float]], meta: Mapping[str, Any]) -> Path:
    """Validate and write a profile; ``meta`` needs model and device (precision, compiled, ... optional)."""
    meta = dict(meta)
    check_meta(meta)
    if "rows" in meta or "format" in meta:
        raise ValueError("metadata must not contain 'rows' or 'format'")
    clean = [normalise_row(r, i) for i, r in enumerate(rows)]
    if not clean:
        raise ValueError("a profile needs at least one row")
    doc = {"format": PROFILE_FORMAT, "precision": "fp16", "compiled": False, **meta, "rows": clean}
    path = Path(path)
    with replaced_on_success(path, option=None, make_folder=True) as partial:  # (whole, or the old one kept)
        partial.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def check_meta(meta: Mapping[str, Any]) -> None:
    """A profile's metadata: ``model`` and ``device`` non-empty strings, ``batching`` one of `BATCHING` (a typo
    switched the measured model to unpadded pricing unsaid)."""
    for key in ("model", "device"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise ValueError(f"profile metadata needs {key!r} (a non-empty string), got {meta.get(key)!r}")
    if "batching" in meta and meta["batching"] not in BATCHING:
        raise ValueError(f"batching={meta['batching']!r} must be one of {', '.join(BATCHING)}")


def read_profile(path: str | Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """A profile file's rows and metadata, validated; every error names the file. UTF-8, with or without the
    byte-order mark an editor may put first (as configs are read)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # (a trace or a config given by mistake)
        raise ValueError(f"{path}: not a {PROFILE_FORMAT} file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise ValueError(f"{path}: not a {PROFILE_FORMAT} file (format={doc.get('format') if isinstance(doc, dict) else None!r})")
    raw = doc.get("rows", [])
    if not isinstance(raw, list):
        raise ValueError(f"{path}: rows must be a list of rows, got {type(raw).__name__} {raw!r:.60}")
    try:
        meta = {k: v for k, v in doc.items() if k not in ("rows", "format")}
        check_meta(meta)
        rows = [normalise_row(_file_row(r, i), i) for i, r in enumerate(raw)]
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: profile has no rows")
    if (unknown := unknown_row_keys(raw)) is not None:
        warnings.warn(ProfileWarning(f"{path}: {unknown}"), stacklevel=2)
    return rows, meta


#: The keys a row may have: `ROW_FIELDS`, `PADDED_FIELDS` and `WEIGHT_FIELD` (metadata may hold others, rows not).
ROW_KEYS: tuple[str, ...] = (*ROW_FIELDS, *PADDED_FIELDS, WEIGHT_FIELD)


def unknown_row_keys(rows: Sequence[Any]) -> str | None:
    """The keys of ``rows`` (a file's, as written) that are no row field, in words: each with how many rows have it
    and the first (1-based), and the field it may mean (``sampels``: ``samples``, whose weights it lost); they are
    dropped. None when every key is known."""
    from controlplane.errors import did_you_mean

    seen: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            for k in row:
                if k not in ROW_KEYS:
                    seen.setdefault(str(k), []).append(i)
    if not seen:
        return None
    named = "; ".join(f"{k!r} in {len(at)} row(s), first row {at[0] + 1}{did_you_mean(k, ROW_KEYS)}"
                      for k, at in seen.items())
    return (f"unknown row key(s) dropped: {named}; a row's keys are {', '.join(ROW_KEYS)} (metadata beside the rows "
            "may hold other keys)")


def _file_row(row: Any, i: int) -> Any:
    """A file's row as written: an object or a list of the fields (`normalise_row` checks its values, counts whole:
    2.5 sequences was read as 2)."""
    if not isinstance(row, (dict, list)):
        raise ValueError(f"{_row(i)}: expected an object of {list(ROW_FIELDS)}, got {row!r}")
    return row
