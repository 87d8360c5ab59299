"""Reader for the Azure LLM inference traces (2023 Splitwise and 2024 DynamoLLM releases).

Columns `TIMESTAMP,ContextTokens,GeneratedTokens` (matched ignoring case). TIMESTAMP is a
wall-clock string, e.g. `2023-11-16 18:17:03.9799600` (2023) or
`2024-05-10 00:00:00.009930+00:00` (2024). Parsing a datetime per row would dominate the read,
so the `YYYY-MM-DD HH:MM` prefix (and time-zone suffix) is parsed once per distinct minute and
only the seconds are parsed per row. Arrivals are computed relative to the first row whose timestamp
reads (a row skipped for a bad token count still sets time 0) from exact whole-second and fractional
parts, so the 100 ns resolution survives.
"""

from __future__ import annotations

import datetime as _dt
from typing import Iterator

from ._io import (MAX_INT, ORDER_TOLERANCE_S, PathLike, backwards, blank_line, check_not_empty, check_row_width,
                  column_index, csv_header, no_rows, open_text, parse_count)
from .csv_quotes import CsvRows, open_quote, row_shape
from .errors import ErrorSink, OnError, TraceFormatError, as_sink
from .gaps import FAR_S, checked_max_gap, long_gap
from .record import TraceRequest, new_basic

TS, CTX, GEN = "TIMESTAMP", "ContextTokens", "GeneratedTokens"
HEADER = (TS, CTX, GEN)


class MixedZones(ValueError):
    """A timestamp with a UTC offset in a file whose first timestamp has none, or one without in a file whose first
    has one: read as UTC, a time without its offset would be off by the offset, silently."""


class BadOffset(ValueError):
    """A UTC offset no time zone has (``+25:00``, ``+23:99``): read as given, it would move the row by a day or more,
    an arrival out of order for the next row instead of an error on this one."""


#: What a malformed timestamp's error expects (`BadOffset`'s adds why its offset is refused).
_EXPECTED = "expected 'YYYY-MM-DD HH:MM:SS[.fffffff][+HH:MM]'"


class _Clock:
    """Timestamp strings -> seconds since the first row, plus what the fast path may cache."""

    __slots__ = ("ord0", "base0", "sec0", "first", "zoned")

    def __init__(self) -> None:
        self.ord0: int | None = None  # day ordinal of the first row
        self.base0 = 0                # first row's whole minute of day in seconds, tz applied
        self.sec0 = 0.0               # first row's seconds within that minute
        self.first = ""               # the first row's timestamp
        self.zoned = False            # whether it gives a UTC offset (every row's must, or none)

    def parse(self, ts: str) -> tuple[float, str, str, float]:
        """Return (t, minute prefix, tz suffix, base) with t == base + (seconds - sec0). Raises ValueError."""
        if (len(ts) < 19 or not ts.isascii() or ts[4] != "-" or ts[7] != "-" or ts[10] not in " T" or ts[13] != ":"
                or ts[16] != ":"):
            raise ValueError(ts)
        digits = ts[:4] + ts[5:7] + ts[8:10] + ts[11:13] + ts[14:16]
        if not digits.isdigit():
            raise ValueError(ts)
        hour, minute = int(ts[11:13]), int(ts[14:16])
        if hour > 23 or minute > 59:
            raise ValueError(ts)
        ordinal = _dt.date(int(ts[:4]), int(ts[5:7]), int(ts[8:10])).toordinal()
        rest, suffix, offset = ts[17:], "", 0
        if rest.endswith("Z"):
            suffix = "Z"
        elif len(rest) > 6 and rest[-6] in "+-" and rest[-3] == ":" and (rest[-5:-3] + rest[-2:]).isdigit():
            suffix = rest[-6:]
            hours, minutes = int(rest[-5:-3]), int(rest[-2:])
            if hours > 23 or minutes > 59:
                raise BadOffset(ts)
            offset = (hours * 3600 + minutes * 60) * (1 if rest[-6] == "+" else -1)
        sec_text = rest[: len(rest) - len(suffix)]
        if not _plain_seconds(sec_text):
            raise ValueError(ts)
        sec = float(sec_text)
        if sec >= 61.0:
            raise ValueError(ts)
        if self.ord0 is None:
            self.ord0 = ordinal
            self.base0 = hour * 3600 + minute * 60 - offset
            self.sec0 = sec
            self.first, self.zoned = ts, bool(suffix)
        elif bool(suffix) != self.zoned:
            raise MixedZones(f"timestamp {ts!r} {'has a' if suffix else 'has no'} UTC offset, and the first row's "
                             f"({self.first!r}) {'has none' if suffix else 'has one'}: a time without an offset would be "
                             "taken as UTC, off by the others' offset; give every row an offset, or none")
        base = float((ordinal - self.ord0) * 86400 + hour * 3600 + minute * 60 - offset - self.base0)
        return base + (sec - self.sec0), ts[:16], suffix, base


def _plain_seconds(s: str) -> bool:
    """'SS' or 'SS.fff...' (digits only)."""
    return len(s) >= 2 and s[:2].isdigit() and (len(s) == 2 or (s[2] == "." and s[3:].isdigit()))


def read_azure(path: PathLike, *, on_error: OnError = "raise", errors: list[TraceFormatError] | None = None,
               max_gap_s: float = FAR_S) -> Iterator[TraceRequest]:
    """Stream an Azure LLM inference CSV as TraceRequests (ids = 0-based row index, first arrival 0.0). A row
    more than ``max_gap_s`` after the row before it is an error (`sim.traces.gaps.long_gap`), whatever ``on_error``."""
    return _read(path, as_sink(on_error, errors), checked_max_gap(max_gap_s))


def _read(path: PathLike, sink: ErrorSink, max_gap_s: float) -> Iterator[TraceRequest]:
    with open_text(path) as f:
        rows = CsvRows(f)
        reader = rows.reader
        header = csv_header(path, reader)
        cols = column_index(path, header, reader.line_num, HEADER, ignore_case=True)
        its, ictx, igen = cols[TS], cols[CTX], cols[GEN]
        standard = (its, ictx, igen) == (0, 1, 2) and len(header) == 3
        clock = _Clock()
        # Fast path cache: the current minute prefix, tz suffix and its base seconds.
        prefix, suffix, nsuf, base, sec0 = "\0", "", 0, 0.0, 0.0
        last = -1.0
        idx = 0
        shape = row_shape(len(header), ints=(ictx, igen), dates=(its,))
        end = reader.line_num  # (the last line read: the row's next starts after it)
        for row in reader:
            start, end = end + 1, reader.line_num
            if start != end and (err := open_quote(path, row, start, end, header, rows.cut_by_end, shape)) is not None:
                sink(err)  # (a quote left open: the lines after it read as one field, not as rows)
                idx += 1
                continue
            try:
                if standard:
                    ts, ctx, gen = row
                else:
                    if len(row) != len(header):
                        raise ValueError  # (the slow path says whether the fields past the header hold text)
                    ts, ctx, gen = row[its], row[ictx], row[igen]
                p = int(ctx)
                o = int(gen)
                if (not (0 <= p <= MAX_INT and 0 <= o <= MAX_INT) or ts[:16] != prefix or ts[16] != ":"
                        or (nsuf and not ts.endswith(suffix)) or not (ctx.isdigit() and gen.isdigit())
                        or not (ts + ctx + gen).isascii() or "_" in ts):  # (`plain`: int() takes '1_000', '１０')
                    raise ValueError
                # float() rejects tz text, blanks and junk; the range check catches nan/inf/negatives.
                s = float(ts[17:len(ts) - nsuf])
                t = base + (s - sec0)
                if not (0.0 <= s < 61.0 and t >= last):
                    raise ValueError
            except (ValueError, IndexError, TypeError):
                # Slow path: a new minute, a blank line, or a bad row; name the bad field.
                if blank_line(row):
                    continue
                line = start
                if clock.ord0 is None and its < len(row):
                    # time 0 is the first row whose timestamp reads, whatever else is bad in it (skipped with
                    # on_error='skip': a bad token count does not move the time axis, nor a window on it)
                    try:
                        clock.parse(row[its].strip())
                        last = 0.0
                    except ValueError:
                        pass
                try:
                    check_not_empty(path, line, row)
                    if len(row) <= max(its, ictx, igen):
                        bad = next(n for n, i in zip(HEADER, (its, ictx, igen)) if i >= len(row))
                        raise TraceFormatError(path, line, bad, f"row has {len(row)} fields, expected {len(header)}")
                    check_row_width(path, line, row, header)
                    p = parse_count(path, line, CTX, row[ictx].strip())
                    o = parse_count(path, line, GEN, row[igen].strip())
                    ts = row[its].strip()
                    try:
                        t, new_prefix, new_suffix, new_base = clock.parse(ts)
                    except MixedZones as exc:
                        raise TraceFormatError(path, line, TS, str(exc)) from None
                    except ValueError as exc:
                        why = "offset must be within ±23:59" if isinstance(exc, BadOffset) else _EXPECTED
                        raise TraceFormatError(path, line, TS, f"malformed timestamp {ts!r} ({why})") from None
                    if t < last:
                        if t < last - ORDER_TOLERANCE_S:
                            raise backwards(path, line, TS, t, last)
                        t = last
                except TraceFormatError as err:
                    sink(err)
                    idx += 1
                    continue
                if t - last > max_gap_s:  # (a new minute: the fast path's rows are within one; not skipped)
                    raise long_gap(path, line, TS, last, t, max_gap_s, repr(ts))
                if ts == row[its]:  # unpadded: later rows of this minute can take the fast path
                    prefix, suffix, nsuf, base, sec0 = new_prefix, new_suffix, len(new_suffix), new_base, clock.sec0
            last = t
            yield new_basic(str(idx), t, p, o)
            idx += 1
        if idx == 0:
            raise no_rows(path)
