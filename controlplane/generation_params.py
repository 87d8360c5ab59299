"""The types of a request's known generation params (``temperature``, ``top_p``, ``top_k``, ``seed``,
``stop``), one rule for every door a request comes through: a trace's ``params`` (checked when the trace is
read, naming file, line and field) and a live replay's submission.

The caches read ``temperature`` and ``seed`` to tell a sampled request from a reproducible one, so a
``"temperature": "hot"`` read as text was served in a replay where the live run refused it. Other params
are free-form (a trace may carry what only its own plugins read); a null is no value. A number is finite:
JSON's ``NaN`` and ``Infinity`` (which Python's ``json`` reads) are no temperature a server takes.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["KNOWN_PARAMS", "param_problem"]

#: The params with a fixed type, and what it is.
KNOWN_PARAMS = {"temperature": "a number", "top_p": "a number", "top_k": "an integer", "seed": "an integer",
                "stop": "a string or a list of strings"}


def param_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the param ``name`` (``"params.top_k must be an integer, not 0.5"``), or None.
    A list arrives as a tuple from a trace record (its values frozen to stay hashable)."""
    if value is None or name not in KNOWN_PARAMS:
        return None
    if name == "stop":
        ok = isinstance(value, str) or (isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value))
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and (name in ("temperature", "top_p") or isinstance(value, int))
        if ok and isinstance(value, float) and not math.isfinite(value):
            return f"params.{name} must be a finite number, not {value!r}"
    return None if ok else f"params.{name} must be {KNOWN_PARAMS[name]}, not {value!r}"
