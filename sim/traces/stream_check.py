"""The checks a trace file's reader makes of each row, made of a stream of `TraceRequest`s built in
memory (`sim.replay.replay([TraceRequest(...), ...])`): a request the readers would refuse is an
error naming it and its field, not a run that serves it (a negative arrival as an invented queue,
a negative prompt as one token).
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Iterable, Iterator

from ._io import MAX_INT
from .record import TraceRequest


class TraceRequestError(ValueError):
    """A request of an in-memory stream that a trace file's reader would refuse: which one (its id
    and its 0-based place in the stream), which field, why."""

    def __init__(self, request: TraceRequest, index: int, field: str, reason: str) -> None:
        self.request_id, self.index, self.field, self.reason = request.request_id, index, field, reason
        super().__init__(f"trace request {request.request_id!r} (request {index} of the stream): field {field!r}: "
                         f"{reason}")


def checked_requests(requests: Iterable[TraceRequest]) -> Iterator[TraceRequest]:
    """``requests``, each checked as the readers check a row, lazily: an arrival that is a finite,
    non-negative number of seconds, token counts that are integers from 0 to 2**31 - 1, a request id
    no earlier request has. The first that fails raises `TraceRequestError`. Cheap (a few
    comparisons and a set a request): the replay of a stream goes through it."""
    seen: set[str] = set()
    add = seen.add
    inf = math.inf
    for r in requests:
        try:
            p, o = r.prompt_tokens, r.output_tokens
        except AttributeError:  # (a dict, a DataFrame's column name: not a request at all)
            raise TypeError(f"trace: request {len(seen)} of the stream is a {type(r).__name__}, not a "
                            "sim.traces.TraceRequest(request_id, arrival_s, prompt_tokens, output_tokens, ...): build "
                            "those from your rows, or write the rows to a trace file (docs/traces.md)") from None
        try:
            ok = (0.0 <= r.arrival_s < inf and 0 <= p <= MAX_INT and 0 <= o <= MAX_INT
                  and (type(p) is int or isinstance(p, Integral)) and (type(o) is int or isinstance(o, Integral))
                  and r.request_id not in seen)
        except TypeError:  # (a value that does not compare with numbers: text, None; an id that cannot be hashed)
            ok = False
        if not ok:
            raise _refusal(r, len(seen), seen)  # (every request before it added its id)
        add(r.request_id)
        yield r


def _refusal(r: TraceRequest, index: int, seen: set[str]) -> TraceRequestError:
    """What is wrong with ``r``, the first check it fails."""
    t = r.arrival_s
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t < math.inf:
        return TraceRequestError(r, index, "arrival_s", f"expected a finite non-negative number of seconds, got {t!r}")
    for field in ("prompt_tokens", "output_tokens"):
        v = getattr(r, field)
        if isinstance(v, bool) or not isinstance(v, Integral) or not 0 <= v <= MAX_INT:
            return TraceRequestError(r, index, field, f"expected an integer from 0 to {MAX_INT:,}, got {v!r}")
    try:
        hash(r.request_id)
    except TypeError:
        return TraceRequestError(r, index, "request_id", f"expected a string, got {r.request_id!r}")
    return TraceRequestError(r, index, "request_id", f"duplicate request id {r.request_id!r}: an earlier request "
                                                     "has it (request ids must be unique in a trace)")
