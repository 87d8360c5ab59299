"""Rate profiles as one line of text, ``"0:1,14400:2"``: what ``--rate-profile`` takes, a sweep
spec may give, and a stored run shows (``TIME_S:FACTOR`` points, commas between them).

``parse_rate_profile(format_rate_profile(points)) == points`` for checked points.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .transforms import rate_profile_points

__all__ = ["format_rate_profile", "parse_rate_profile"]

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SYNTAX = "give TIME_S:FACTOR points separated by commas, e.g. 0:1,14400:2"


def parse_rate_profile(text: str, name: str = "rate profile") -> tuple[tuple[float, float], ...]:
    """The ``(time_s, factor)`` points of ``text``, checked as ``rate_profile`` checks them. A bad
    point is a one-line ValueError naming ``name`` (the option or key; "" for none) and the point
    as written."""
    name = f"{name}: " if name else ""
    if not isinstance(text, str):
        raise ValueError(f"{name}expected text like 0:1,14400:2, got {text!r}")
    pieces = [p.strip() for p in text.split(",")]
    if pieces == [""]:
        raise ValueError(f"{name}no points; {_SYNTAX}")
    points: list[tuple[float, float]] = []
    for piece in pieces:
        t, colon, f = (s.strip() for s in piece.partition(":"))
        if not colon:
            raise ValueError(f"{name}point {piece!r} is not TIME_S:FACTOR; {_SYNTAX}")
        for what, value in (("time", t), ("factor", f)):
            if not _NUMBER.fullmatch(value):
                raise ValueError(f"{name}point {piece!r}: {what} {value!r} is not a number; {_SYNTAX}")
        points.append((float(t), float(f)))
    return rate_profile_points(points, lambda i: f"{name}point {pieces[i]!r}")


def format_rate_profile(points: Sequence[Sequence[float]]) -> str:
    """``points`` as ``parse_rate_profile`` reads them: whole numbers without a decimal point, others
    as Python writes them (so they read back exactly)."""
    return ",".join(f"{_number(t)}:{_number(f)}" for t, f in rate_profile_points(points))


def _number(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)
