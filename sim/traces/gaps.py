"""Long idle stretches in a trace: a first arrival far from 0 (canonical) and a gap far between two rows (every
format with timestamps), refused before a replay idles through them.

A replay runs its control loop through an idle stretch tick by tick (about 5 s of wall time a simulated day at
the default ``control.tick_s`` of 1 s), saying nothing: a row at Unix epoch seconds among rows from 0, a timestamp
in the wrong unit, a date from another month make it idle for hours or days of wall time. So a gap between
consecutive rows of more than `FAR_S` (a day, the threshold of the canonical first arrival) is an error naming
its file, line and field, whatever ``on_error`` (skipped, every later row would go on being far ahead), unless
the format option ``max_gap_s`` allows it. Real traces with multi-hour gaps (a night, a maintenance window) read
as before.
"""

from __future__ import annotations

import math
import numbers

from ._io import PathLike
from .errors import TraceFormatError

#: The longest idle stretch read without being asked for (seconds: a day): a canonical first arrival later than
#: this is refused unless ``rebase`` is given, and a gap between two rows longer than this unless ``max_gap_s``.
FAR_S = 86_400.0
#: Wall seconds a replay spends per simulated day of idle time at the default ``control.tick_s`` (1 s): the
#: control loop ticks through it (measured: a first arrival at 2 days took 9.4 s more than one at 1 s).
IDLE_WALL_S_PER_DAY = 5.0
#: The option that allows longer gaps, as the format options (`sim.traces.FORMAT_OPTIONS`) name it.
OPTION = "max_gap_s"


def checked_max_gap(value: object) -> float:
    """The ``max_gap_s`` option: a number of seconds > 0 (``inf`` or JSON's ``Infinity``: no limit)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{OPTION} must be a number of seconds > 0 (the longest gap between two rows a replay "
                         f"idles through; Infinity: any), got {value!r}")
    return float(value)


def duration(seconds: float) -> str:
    """``seconds`` in words, roughly: '40 s', '12 minutes', '27 hours', '9 days'."""
    if not seconds < 1e15:
        return f"{seconds:.3g} s"
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:,.0f} s"


def seconds_text(seconds: float) -> str:
    """``seconds`` as an error shows them: ``1,700,000,000.000`` (and ``1e+297`` for a number too long to read)."""
    return f"{seconds:,.3f}" if seconds < 1e15 else f"{seconds:.6g}"


def idle_text(seconds: float) -> str:
    """'N simulated days before this request (about W of wall time: ...)': what idling ``seconds`` costs."""
    days = seconds / 86_400
    days_text = f"{days:,.0f}" if days >= 10 else f"{days:,.1f}"
    if days >= 1e12:
        days_text = f"{days:.3g}"
    return (f"{days_text} simulated days before this request (about {duration(days * IDLE_WALL_S_PER_DAY)} of wall "
            f"time: ~{IDLE_WALL_S_PER_DAY:g} s a simulated day at the default control.tick_s of 1 s)")


def long_gap(path: PathLike, line: int, field: str, previous_s: float, t_s: float, max_gap_s: float,
             shown: str = "") -> TraceFormatError:
    """The error of a row arriving more than ``max_gap_s`` after the row before it (``previous_s`` and ``t_s`` are
    the two arrivals in seconds on the trace's own axis); ``shown``: the row's value as the file writes it, where
    that is not seconds (a Mooncake timestamp in milliseconds, an Azure date)."""
    gap = t_s - previous_s
    limit = "a day (86,400 s)" if max_gap_s == FAR_S else f"{seconds_text(max_gap_s)} s (max_gap_s)"
    need, in_python = (str(math.ceil(gap)),) * 2 if gap < 1e15 else ("Infinity", "math.inf")
    return TraceFormatError(
        path, line, field,
        f"this row{f' ({shown})' if shown else ''} arrives {seconds_text(gap)} s after the row before it (at "
        f"{seconds_text(t_s)} s, the row before at {seconds_text(previous_s)} s): a replay "
        f"would idle {idle_text(gap)}; a gap longer than {limit} is refused: fix the row if it is a typo, another "
        f"unit or another trace's time, or, if the trace does pause that long, allow it with --opt {OPTION}={need} "
        f"(read_trace(..., {OPTION}={in_python}); Infinity allows any gap)")
