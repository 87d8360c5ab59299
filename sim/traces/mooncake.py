"""Reader for Mooncake (Kimi, FAST'25) JSONL traces.

Each line: `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`;
each hash id names one 512-token prefix block, equal ids mean reusable KV blocks.

The released timestamps are quantized into ~3 s buckets (90% of inter-arrivals are 0), which
would replay as synchronized bursts. With `spread="uniform"` (default) the requests of one
bucket are placed at sorted uniform-random times over the gap to the next distinct timestamp
(assuming the timestamps were floored), keeping file order; the last bucket uses the mean
gap between buckets. The whole trace is then shifted so the first request arrives at 0.0.
Only one bucket is buffered, so memory stays bounded.
"""

from __future__ import annotations

import json
import math
from typing import Iterator

import numpy as np

from ._io import PathLike, backwards, empty_file, json_column, open_text, parse_count
from ._rng import require_rng
from .errors import ErrorSink, OnError, TraceFormatError, as_sink
from .record import TraceRequest, new_hashed

SPREADS = ("none", "uniform")
BLOCK_TOKENS = 512
TS, IN, OUT, HASH = "timestamp", "input_length", "output_length", "hash_ids"

_Row = tuple[str, float, int, int, tuple[int, ...]]  # id, raw ms, prompt, output, hashes


def read_mooncake(path: PathLike, *, rng: np.random.Generator | None = None, spread: str = "uniform",
                  block_tokens: int = BLOCK_TOKENS, on_error: OnError = "raise",
                  errors: list[TraceFormatError] | None = None) -> Iterator[TraceRequest]:
    """Stream a Mooncake JSONL trace; arrival_s in seconds from the first request."""
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r} for format 'mooncake'; valid choices: {', '.join(SPREADS)}")
    if not (isinstance(block_tokens, int) and block_tokens > 0):
        raise ValueError(f"block_tokens must be a positive integer, got {block_tokens!r}")
    if spread == "uniform":
        rng = require_rng(rng, "mooncake spread='uniform' (pass spread='none' to keep the raw buckets)")
    rows = _rows(path, as_sink(on_error, errors))
    if spread == "none":
        return _plain(rows, block_tokens)
    return _spread(rows, rng, block_tokens)


def _rows(path: PathLike, sink: ErrorSink) -> Iterator[_Row]:
    """Validated rows in file order (raw ms timestamps); raises or skips bad ones via `sink`."""
    loads = json.loads
    with open_text(path) as f:
        idx = 0
        last = -math.inf
        seen_any = False
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            seen_any = True
            rid = str(idx)
            idx += 1
            try:
                try:
                    obj = loads(text)
                except json.JSONDecodeError as e:
                    raise TraceFormatError(path, lineno, None, f"invalid JSON: {e.msg} (column {json_column(text, e)})") from None
                if not isinstance(obj, dict):
                    raise TraceFormatError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
                try:
                    ts, p, o = obj[TS], obj[IN], obj[OUT]
                except KeyError as e:
                    raise TraceFormatError(path, lineno, e.args[0], "missing required key") from None
                if type(ts) is int or type(ts) is float:
                    ts = float(ts)
                    if not (0.0 <= ts < math.inf):
                        raise TraceFormatError(path, lineno, TS, f"expected finite non-negative milliseconds, got {ts!r}")
                else:
                    raise TraceFormatError(path, lineno, TS, f"expected a number of milliseconds, got {ts!r}")
                if type(p) is not int or p < 0:
                    p = parse_count(path, lineno, IN, p)
                if type(o) is not int or o < 0:
                    o = parse_count(path, lineno, OUT, o)
                hashes = obj.get(HASH)
                if hashes is None:
                    hashes = ()
                elif type(hashes) is list and _all_ints(hashes):
                    hashes = tuple(hashes)
                else:
                    raise TraceFormatError(path, lineno, HASH, f"expected a list of integers, got {str(hashes)[:80]!r}")
                if ts < last:
                    raise backwards(path, lineno, TS, ts, last, unit="ms")
            except TraceFormatError as err:
                sink(err)
                continue
            last = ts
            yield rid, ts, p, o, hashes
        if not seen_any:
            raise empty_file(path)


def _all_ints(xs: list) -> bool:
    """All JSON integers? A C-speed sum instead of a per-item check: floats make the sum a
    float, strings/null/lists raise (JSON true/false would pass, as 1/0)."""
    try:
        return type(sum(xs)) is int
    except TypeError:
        return False


def _plain(rows: Iterator[_Row], block: int) -> Iterator[TraceRequest]:
    t0 = None
    for rid, ts, p, o, hashes in rows:
        if t0 is None:
            t0 = ts
        yield new_hashed(rid, (ts - t0) / 1000.0, p, o, hashes, block)


def _spread(rows: Iterator[_Row], rng: np.random.Generator, block: int) -> Iterator[TraceRequest]:
    bucket: list[_Row] = []
    first_ts = None     # first raw timestamp (ms), for the mean bucket gap
    shift = None        # ms subtracted so the first emitted request is at 0.0
    n_gaps = 0
    for row in rows:
        ts = row[1]
        if bucket and ts != bucket[0][1]:
            gap = ts - bucket[0][1]
            n_gaps += 1
            shift = yield from _emit(bucket, gap, rng, block, shift)
            bucket = []
        if first_ts is None:
            first_ts = ts
        bucket.append(row)
    if bucket:
        gap = (bucket[0][1] - first_ts) / n_gaps if n_gaps else 0.0
        yield from _emit(bucket, gap, rng, block, shift)


def _emit(bucket: list[_Row], gap_ms: float, rng: np.random.Generator, block: int,
          shift: float | None) -> Iterator[TraceRequest]:
    """Yield one bucket spread over [ts, ts + gap); returns the (possibly new) global shift."""
    ts0 = bucket[0][1]
    offsets = np.sort(rng.uniform(0.0, gap_ms, size=len(bucket))) if gap_ms > 0 else np.zeros(len(bucket))
    times = (ts0 + offsets).tolist()
    if shift is None:
        shift = times[0]
    for (rid, _, p, o, hashes), t in zip(bucket, times):
        yield new_hashed(rid, (t - shift) / 1000.0, p, o, hashes, block)
    return shift
