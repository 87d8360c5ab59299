"""Reader for Mooncake (Kimi, FAST'25) JSONL traces.

Each line: `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`;
each hash id names one 512-token prefix block, equal ids mean reusable KV blocks.

The released timestamps are quantized into ~3 s buckets (90% of inter-arrivals are 0), which
would replay as synchronized bursts. With `spread="uniform"` (default) the requests of one
bucket are placed at sorted uniform-random times over the gap to the next distinct timestamp
(assuming the timestamps were floored), keeping file order; the last bucket uses the mean
gap between buckets. The whole trace is then shifted so the first request arrives at 0.0.
Only one bucket is buffered, so memory stays bounded.

`timestamp_unit="s"` reads timestamps as seconds. The row parsing and the spreading also serve
Alibaba's Qwen-Bailian traces (bailian.py: seconds, 16-token blocks, ids from `chat_id`), whose
keys overlap these: a file with Bailian's keys read as mooncake logs a warning.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ._io import (MAX_INT, PathLike, backwards, check_text, duplicate_id, empty_file, json_column, open_text,
                  parse_count)
from ._rng import require_rng
from .errors import ErrorSink, OnError, TraceFormatError, as_sink
from .gaps import FAR_S, checked_max_gap, long_gap
from .record import TraceRequest, new_hashed, new_labelled

SPREADS = ("none", "uniform")
BLOCK_TOKENS = 512
TS, IN, OUT, HASH = "timestamp", "input_length", "output_length", "hash_ids"
#: timestamp_unit -> (units per second, the unit's name in errors)
UNITS = {"ms": (1000.0, "milliseconds"), "s": (1.0, "seconds")}
#: The request id key of Alibaba's Qwen-Bailian traces (bailian.py), whose other keys are Mooncake's.
BAILIAN_ID = "chat_id"

log = logging.getLogger("sim.traces")

_Row = tuple[str, float, int, int, tuple[int, ...], "str | None"]  # id, raw time, prompt, output, hashes, tenant
# (id None: no request, the time origin only: a bad row skipped before any good one, whose timestamp reads)


@dataclass(frozen=True)
class Layout:
    """What differs between the JSONL traces in Mooncake's layout: the timestamp's unit, where the
    request id and the tenant come from."""

    format: str = "mooncake"
    unit: str = "ms"             # a key of UNITS
    id_key: str | None = None    # None: the 0-based data row index
    tenant_key: str | None = None
    unique_ids: bool = False     # with id_key: a row repeating an earlier row's id is a bad row
    max_gap_s: float = FAR_S     # a row later than this after the row before it: an error (`gaps.long_gap`)


def read_mooncake(path: PathLike, *, rng: np.random.Generator | None = None, spread: str = "uniform",
                  block_tokens: int = BLOCK_TOKENS, timestamp_unit: str = "ms", on_error: OnError = "raise",
                  errors: list[TraceFormatError] | None = None, max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream a Mooncake JSONL trace; arrival_s in seconds from the first request. A row more than ``max_gap_s``
    after the row before it is an error (`sim.traces.gaps.long_gap`), whatever ``on_error``."""
    if timestamp_unit not in UNITS:
        raise ValueError(f"unknown timestamp_unit {timestamp_unit!r} for format 'mooncake'; valid choices: "
                         f"{', '.join(UNITS)}")
    layout = Layout(unit=timestamp_unit, max_gap_s=checked_max_gap(max_gap_s))
    return read_layout(path, layout, rng, spread, block_tokens, as_sink(on_error, errors))


def read_layout(path: PathLike, layout: Layout, rng: np.random.Generator | None, spread: str, block_tokens: int,
                sink: ErrorSink) -> Iterator[TraceRequest]:
    """The requests of a file in Mooncake's layout, its options checked before anything is read."""
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r} for format {layout.format!r}; valid choices: {', '.join(SPREADS)}")
    if not (isinstance(block_tokens, int) and not isinstance(block_tokens, bool) and block_tokens > 0):
        raise ValueError(f"block_tokens must be a positive integer, got {block_tokens!r}")
    if spread == "uniform":
        rng = require_rng(rng, f"{layout.format} spread='uniform' (pass spread='none' to keep the raw timestamps)")
    rows = _rows(path, sink, layout)
    per_s = UNITS[layout.unit][0]
    if spread == "none":
        return _plain(rows, block_tokens, per_s)
    return _spread(rows, rng, block_tokens, per_s)


def _rows(path: PathLike, sink: ErrorSink, layout: Layout) -> Iterator[_Row]:
    """Validated rows in file order (raw timestamps); raises or skips bad ones via `sink`."""
    loads = json.loads
    unit, unit_name = layout.unit, UNITS[layout.unit][1]
    id_key, tenant_key = layout.id_key, layout.tenant_key
    warn_bailian = layout.format == "mooncake"
    per_s = UNITS[unit][0]
    far = layout.max_gap_s * per_s  # (the longest gap, in the file's unit)
    with open_text(path) as f:
        idx = 0
        last = -math.inf
        seen_any = False
        seen: set[str] | None = set() if id_key is not None and layout.unique_ids else None  # the ids read
        origin = True  # no row has set time 0 yet
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            seen_any = True
            rid = str(idx)
            idx += 1
            tenant = None
            ts = None
            try:
                try:
                    obj = loads(text)
                except json.JSONDecodeError as e:
                    raise TraceFormatError(path, lineno, None, f"invalid JSON: {e.msg} (column {json_column(text, e)})") from None
                if not isinstance(obj, dict):
                    raise TraceFormatError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
                if warn_bailian:
                    warn_bailian = False
                    if BAILIAN_ID in obj:
                        log.warning("%s: its rows have Bailian's key %r: if it is a Qwen-Bailian trace (timestamps "
                                    "in seconds, 16-token hash blocks), read it with --format bailian; read as "
                                    "mooncake, its timestamps are taken as %s", path, BAILIAN_ID, unit_name)
                raw = obj.get(TS, _MISSING)
                if type(raw) is int or type(raw) is float:
                    if not (0.0 <= raw < math.inf):
                        raise TraceFormatError(path, lineno, TS,
                                               f"expected finite non-negative {unit_name}, got {float(raw)!r}")
                elif raw is _MISSING:
                    raise TraceFormatError(path, lineno, TS, "missing required key")
                else:
                    raise TraceFormatError(path, lineno, TS, f"expected a number of {unit_name}, got {raw!r}")
                ts = float(raw)  # (read: the time origin, if this row is the first, whatever else is bad in it)
                try:
                    p, o = obj[IN], obj[OUT]
                except KeyError as e:
                    raise TraceFormatError(path, lineno, e.args[0], "missing required key") from None
                if type(p) is not int or not 0 <= p <= MAX_INT:
                    p = parse_count(path, lineno, IN, p)
                if type(o) is not int or not 0 <= o <= MAX_INT:
                    o = parse_count(path, lineno, OUT, o)
                hashes = obj.get(HASH)
                if hashes is None:
                    hashes = ()
                elif type(hashes) is list and _all_ints(hashes):
                    hashes = tuple(hashes)
                else:
                    raise TraceFormatError(path, lineno, HASH, f"expected a list of integers, got {str(hashes)[:80]!r}")
                if id_key is not None:
                    rid = _request_id(path, lineno, id_key, obj.get(id_key, _MISSING))
                    if seen is not None and rid in seen:
                        raise duplicate_id(path, lineno, id_key, rid)
                if tenant_key is not None:
                    tenant = _tenant(path, lineno, tenant_key, obj.get(tenant_key, _MISSING))
                if ts < last:
                    raise backwards(path, lineno, TS, ts, last, unit=unit)
            except TraceFormatError as err:
                sink(err)
                if origin and ts is not None and ts >= last:
                    # time 0 is the first row whose timestamp reads, whatever else is bad in it (skipped with
                    # on_error='skip': a bad token count does not move the time axis, nor a window on it)
                    origin = False
                    last = ts
                    yield None, ts, 0, 0, (), None
                continue
            if last != -math.inf and ts - last > far:  # (a whole-file error: not skipped)
                raise long_gap(path, lineno, TS, last / per_s, ts / per_s, layout.max_gap_s, f"{TS} {raw!r} {unit}")
            last = ts
            origin = False
            if seen is not None:
                seen.add(rid)
            yield rid, ts, p, o, hashes, tenant
        if not seen_any:
            raise empty_file(path, jsonl=True)


_MISSING = object()


def _request_id(path: PathLike, line: int, key: str, value: object) -> str:
    """A request id key: an integer (or integral float) or a non-empty string."""
    if value is _MISSING:
        raise TraceFormatError(path, line, key, "missing required key")
    if type(value) is int:
        return str(value)
    if type(value) is float and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return check_text(path, line, key, value.strip())
    raise TraceFormatError(path, line, key, f"expected an integer or a non-empty string id, got {value!r}")


def _tenant(path: PathLike, line: int, key: str, value: object) -> str | None:
    """The tenant key's value (asked for: absent is an error, not every request silently untenanted;
    null or empty: no tenant)."""
    if value is _MISSING:
        raise TraceFormatError(path, line, key, "missing required key (asked for as the tenant)")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return check_text(path, line, key, value.strip())
    raise TraceFormatError(path, line, key, f"expected a string, got {value!r}")


def _all_ints(xs: list) -> bool:
    """All JSON integers? A C-speed sum instead of a per-item check: floats make the sum a
    float, strings/null/lists raise (JSON true/false would pass, as 1/0)."""
    try:
        return type(sum(xs)) is int
    except TypeError:
        return False


def _record(rid: str, t: float, p: int, o: int, hashes: tuple[int, ...], tenant: str | None,
            block: int) -> TraceRequest:
    if tenant is None:
        return new_hashed(rid, t, p, o, hashes, block)
    return new_labelled(rid, t, p, o, None, tenant, hashes, block)


def _plain(rows: Iterator[_Row], block: int, per_s: float) -> Iterator[TraceRequest]:
    t0 = None
    for rid, ts, p, o, hashes, tenant in rows:
        if t0 is None:
            t0 = ts
            if rid is None:  # (the time origin only)
                continue
        yield _record(rid, (ts - t0) / per_s, p, o, hashes, tenant, block)


def _spread(rows: Iterator[_Row], rng: np.random.Generator, block: int, per_s: float) -> Iterator[TraceRequest]:
    bucket: list[_Row] = []
    first_ts = None     # first raw timestamp, for the mean bucket gap
    shift = None        # raw time subtracted so the first emitted request is at 0.0
    n_gaps = 0
    for row in rows:
        ts = row[1]
        if row[0] is None:  # the time origin only (a bad first row): no request, no bucket
            shift = ts
            continue
        if bucket and ts != bucket[0][1]:
            gap = ts - bucket[0][1]
            n_gaps += 1
            shift = yield from _emit(bucket, gap, rng, block, shift, per_s)
            bucket = []
        if first_ts is None:
            first_ts = ts
        bucket.append(row)
    if bucket:
        gap = (bucket[0][1] - first_ts) / n_gaps if n_gaps else 0.0
        yield from _emit(bucket, gap, rng, block, shift, per_s)


def _emit(bucket: list[_Row], gap: float, rng: np.random.Generator, block: int,
          shift: float | None, per_s: float) -> Iterator[TraceRequest]:
    """Yield one bucket spread over [ts, ts + gap) (raw units); returns the (possibly new) global shift."""
    ts0 = bucket[0][1]
    offsets = np.sort(rng.uniform(0.0, gap, size=len(bucket))) if gap > 0 else np.zeros(len(bucket))
    times = (ts0 + offsets).tolist()
    if shift is None:
        shift = times[0]
    for (rid, _, p, o, hashes, tenant), t in zip(bucket, times):
        yield _record(rid, (t - shift) / per_s, p, o, hashes, tenant, block)
    return shift
