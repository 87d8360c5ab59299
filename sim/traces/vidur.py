"""Reader for Vidur-style length tables (e.g. arXiv summarization token counts).

Columns `num_prefill_tokens,num_decode_tokens[,num_total_tokens,pd_ratio]` (matched ignoring case): lengths only, no
timestamps. Arrivals come from a seeded renewal process, as Vidur itself does: the first
request at 0.0, then inter-arrival gaps that are exponential (`arrival="poisson"`, rate `qps`)
or gamma with mean 1/qps and coefficient of variation `cv` (`arrival="gamma"`, cv > 1 is
burstier than Poisson). Gaps are drawn in chunks, so the rng is advanced in chunk-sized steps.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterator

import numpy as np

from ._io import (MAX_INT, PathLike, blank_line, check_not_empty, check_row_width, column_index, csv_header, no_rows,
                  open_text, parse_count)
from .csv_quotes import CsvRows, open_quote, row_shape
from ._rng import require_rng
from .errors import ErrorSink, OnError, TraceFormatError, as_sink
from .record import TraceRequest, new_basic

ARRIVALS = ("poisson", "gamma")
PREFILL, DECODE = "num_prefill_tokens", "num_decode_tokens"
_CHUNK = 4096


def inter_arrivals(rng: np.random.Generator, arrival: str, qps: float, cv: float) -> Iterator[float]:
    """Endless seeded inter-arrival gaps (seconds) with mean 1/qps (options checked at call time)."""
    check_arrival(arrival, qps, cv)
    return _gaps(rng, arrival, float(qps), float(cv))


def check_arrival(arrival: str, qps: float, cv: float) -> None:
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival {arrival!r}; valid choices: {', '.join(ARRIVALS)}")
    for name, value in (("qps", qps), ("cv", cv)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _gaps(rng: np.random.Generator, arrival: str, qps: float, cv: float) -> Iterator[float]:
    while True:
        if arrival == "poisson":
            chunk = rng.exponential(1.0 / qps, size=_CHUNK)
        else:
            shape = 1.0 / (cv * cv)
            chunk = rng.gamma(shape, 1.0 / (qps * shape), size=_CHUNK)
        yield from chunk.tolist()


def read_vidur(path: PathLike, *, rng: np.random.Generator | None = None, arrival: str = "poisson",
               qps: float = 1.0, cv: float = 2.0, on_error: OnError = "raise",
               errors: list[TraceFormatError] | None = None) -> Iterator[TraceRequest]:
    """Stream a Vidur length table with synthetic seeded arrivals (ids = 0-based row index)."""
    check_arrival(arrival, qps, cv)
    gaps = inter_arrivals(require_rng(rng, f"vidur arrival={arrival!r}"), arrival, qps, cv)
    return _read(path, gaps, as_sink(on_error, errors))


def _read(path: PathLike, gaps: Iterator[float], sink: ErrorSink) -> Iterator[TraceRequest]:
    with open_text(path) as f:
        rows = CsvRows(f)
        reader = rows.reader
        header = csv_header(path, reader)
        cols = column_index(path, header, reader.line_num, (PREFILL, DECODE), ignore_case=True)
        ip, io_ = cols[PREFILL], cols[DECODE]
        idx = 0
        t = 0.0
        first = True
        width = len(header)
        shape = row_shape(width, ints=(ip, io_))
        end = reader.line_num  # (the last line read: the row's next starts after it)
        for row in reader:
            start, end = end + 1, reader.line_num
            if start != end and (err := open_quote(path, row, start, end, header, rows.cut_by_end, shape)) is not None:
                sink(err)  # (a quote left open: the lines after it read as one field, not as rows)
                idx += 1
                continue
            try:
                pt, ot = row[ip], row[io_]
                if not (pt.isdigit() and ot.isdigit() and (pt + ot).isascii()):
                    raise ValueError  # (`plain`, inlined: int() takes '1_000' and '１０' too)
                p = int(pt)
                o = int(ot)
                if not (0 <= p <= MAX_INT and 0 <= o <= MAX_INT) or len(row) != width:
                    raise ValueError
            except (ValueError, IndexError):
                if blank_line(row):
                    continue
                line = start
                try:
                    check_not_empty(path, line, row)
                    if len(row) <= max(ip, io_):
                        bad = PREFILL if ip >= len(row) else DECODE
                        raise TraceFormatError(path, line, bad, f"row has {len(row)} fields, expected {len(header)}")
                    check_row_width(path, line, row, header)
                    p = parse_count(path, line, PREFILL, row[ip].strip())
                    o = parse_count(path, line, DECODE, row[io_].strip())
                except TraceFormatError as err:
                    sink(err)
                    idx += 1
                    continue
            if first:
                first = False
            else:
                t += next(gaps)
            yield new_basic(str(idx), t, p, o)
            idx += 1
        if idx == 0:
            raise no_rows(path)
