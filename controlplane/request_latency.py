"""The one definition of a request's latencies, shared by the run summary, the ``request`` table
and the benchmarks, so that a p99 in a summary and a p99 computed from the stored rows agree.

Kept free of imports: the storage layer and the core's statistics both use it.
"""

from __future__ import annotations

from typing import Any

Latencies = tuple["float | None", "float | None", "float | None", "float | None"]

#: The latencies of a request that did not complete: none (see `stored_latencies`).
NO_LATENCIES: Latencies = (None, None, None, None)


def latencies(
    arrival_s: float,
    scheduled_s: float | None,
    first_token_s: float | None,
    finish_s: float | None,
    output_tokens: int,
    reply_held: bool = False,
) -> Latencies:
    """``(ttft_s, tpot_s, e2e_s, queue_s)`` from a request's timestamps; ``None`` where undefined.

    * TTFT = first token - arrival: the first token its client could get. A reply held for the answer's
      guardian plan (``reply_held``: a planner may check answers before the reply, `Request.reply_held`)
      goes out whole at its finish: its TTFT is the reply's, finish - arrival, and its TPOT is ``None``
      (all its tokens reach the client at once), while ``first_token_s`` stays the generation's first
      token. (Its TTFT was the generation's: 0.01-0.14 s on a daemon whose held streams' first text came
      after 3-6 s.)
    * E2E = finish - arrival. These are a completed request's latencies: the stored rows of the other
      statuses hold none (`stored_latencies`).
    * queue = first scheduled - arrival: the time before it first entered a batch (a cache hit
      is "scheduled" when it is answered). ``None`` if it never was, even when it has a finish.
    * TPOT = (finish - first token) / (output tokens - 1): the mean gap between the tokens after
      the first. A one-token (or empty) output has no such gap, so its TPOT is ``None``, not 0:
      percentiles leave it out, and an SLO on TPOT counts it as met (there is no inter-token
      latency to miss). Nor has an answer whose tokens all came at once (first token = finish):
      a response-cache hit, where no decode happened (its TPOT was 0, and hits pulled the TPOT
      percentiles down to near 0).
    """
    if reply_held and finish_s is not None:
        first_token_s = finish_s
    ttft = None if first_token_s is None else first_token_s - arrival_s
    e2e = None if finish_s is None else finish_s - arrival_s
    queue = None if scheduled_s is None else scheduled_s - arrival_s
    tpot = (
        (finish_s - first_token_s) / (output_tokens - 1)
        if first_token_s is not None and finish_s is not None and output_tokens > 1 and finish_s != first_token_s
        else None
    )
    return ttft, tpot, e2e, queue


def stored_latencies(
    status: str,
    arrival_s: float,
    scheduled_s: float | None,
    first_token_s: float | None,
    finish_s: float | None,
    output_tokens: int,
    reply_held: bool = False,
) -> Latencies:
    """The ``ttft_s, tpot_s, e2e_s, queue_s`` columns of a ``request`` row whose status is ``status`` (a value).

    A completed request's are :func:`latencies`, exactly what the run summary counts. Every other status
    (rejected, failed, cancelled, blocked, in_flight) stores none (NULL): the summary counts no latency of
    theirs, and a time "to the end" of a request turned away, given up on or blocked is no end-to-end latency
    (a rejected request's E2E was its refusal's 0 s, which pulled SQL averages below the summary's). How far
    such a request got stays in its timestamp columns (``scheduled_s``, ``first_token_s``, ``finish_s``):
    ``finish_s - arrival_s`` is when it left (docs/architecture.md, "Stored schema")."""
    if status != "completed":
        return NO_LATENCIES
    return latencies(arrival_s, scheduled_s, first_token_s, finish_s, output_tokens, reply_held)


def request_latencies(r: Any) -> Latencies:
    """:func:`latencies` of anything with a request's timestamp attributes (``types.Request``, and its
    ``reply_held`` where it has one)."""
    return latencies(r.arrival_s, r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens,
                     getattr(r, "reply_held", False))
