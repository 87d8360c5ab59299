"""Replica scorers for the weighted routers (llm-d's endpoint-picker scorers, and the seed's).

Each scorer gives every candidate replica a score in [0, 1], higher is better; a router adds
them up with weights (``plugins.weighted_routing``). Load scorers are min-max normalised over
the candidates, as llm-d's queue scorer is: the least loaded gets 1, the most loaded 0, and all
get 1 when they are equal. The queue sums they read (``estimated-work``'s queued prefill and
output, as `work_tokens` counts them) are kept by the queue (`controlplane.waiting_queue`): a
replica's queue is not walked at each arrival.

| name | what it scores |
|---|---|
| ``prefix-cache-hit`` | share of the prompt the replica's prefix cache holds now (``ctx.prefix_match``: the cache's actual state, through ``cp_prefix_peek``) |
| ``queue-depth`` | fewer requests waiting |
| ``kv-utilization`` | more free KV blocks (1 - used / total) |
| ``active-requests`` | fewer requests running |
| ``estimated-work`` | less work queued, in seconds at the replica's measured speed: remaining prefill + expected output tokens (the seed's complexity estimate: the prompt and ``max_output_tokens``) |
| ``session-affinity`` | 1 on the replica that served the request's session last (``params["session_id"]``, else its tenant) |
| ``speed`` | measured speed (tokens per busy second) relative to the fastest replica (heterogeneous replicas) |
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from controlplane.events import RequestFinished
from controlplane.types import UNLIMITED_KV_BLOCKS
from controlplane.waiting_queue import WaitingQueue

Scores = list[float]


def _inverted_minmax(values: Sequence[float]) -> Scores:
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def session_key(request) -> str | None:
    for k, v in request.params:
        if k in ("session_id", "session"):
            return str(v)
    return request.tenant


class ReplicaStats:
    """What scorers learn from the run: measured replica speed and the sessions' last replicas."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.tokens: dict[str, float] = {}  # worker -> tokens computed by its completed requests
        self.sessions: OrderedDict[str, str] = OrderedDict()
        self.max_sessions = max_sessions

    def observe(self, event) -> None:
        if type(event) is RequestFinished:
            r = event.request
            if r.worker_id is not None and r.first_token_s is not None:
                done = r.prompt_tokens - r.cached_tokens + r.output_tokens
                self.tokens[r.worker_id] = self.tokens.get(r.worker_id, 0.0) + done

    def routed(self, request, worker_id: str) -> None:
        key = session_key(request)
        if key is not None:
            self.sessions[key] = worker_id
            self.sessions.move_to_end(key)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)

    def speed(self, w) -> float | None:
        """Tokens per busy second; None before the replica has finished anything."""
        t = self.tokens.get(w.worker_id)
        if not t or w.busy_s <= 0:
            return None
        return t / w.busy_s

    def relative_speeds(self, workers) -> list[float]:
        """Each replica's speed over the fastest measured; 1 for replicas not measured yet."""
        speeds = [self.speed(w) for w in workers]
        known = [s for s in speeds if s]
        if not known:
            return [1.0] * len(workers)
        top = max(known)
        return [s / top if s else 1.0 for s in speeds]


def prefix_cache_hit(ctx, request, workers, stats) -> Scores:
    if not request.hash_ids or request.prompt_tokens <= 0:
        return [0.0] * len(workers)
    return [min(1.0, ctx.prefix_match(w, request) / request.prompt_tokens) for w in workers]


def queue_depth(ctx, request, workers, stats) -> Scores:
    return _inverted_minmax([len(w.waiting) for w in workers])


def kv_utilization(ctx, request, workers, stats) -> Scores:
    return [1.0 - w.num_kv_blocks_used / w.num_kv_blocks if w.num_kv_blocks < UNLIMITED_KV_BLOCKS else 1.0
            for w in workers]


def active_requests(ctx, request, workers, stats) -> Scores:
    return _inverted_minmax([len(w.running) for w in workers])


def work_tokens(w) -> int:
    """Tokens still to compute on a replica: remaining prefill plus expected output. The queue's part is
    kept by the queue (`controlplane.waiting_queue`): an overloaded replica's queue is not walked at
    every arrival; the running requests (at most ``max_num_seqs``) are."""
    waiting = w.waiting
    if type(waiting) is WaitingQueue:
        total = waiting.remaining_prefill_tokens + waiting.remaining_output_tokens
    else:
        total = 0
        for r in waiting:
            total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    for r in w.running:
        total += r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens
    return total


def estimated_work(ctx, request, workers, stats) -> Scores:
    speeds = stats.relative_speeds(workers)
    return _inverted_minmax([work_tokens(w) / s for w, s in zip(workers, speeds)])


def session_affinity(ctx, request, workers, stats) -> Scores:
    key = session_key(request)
    last = stats.sessions.get(key) if key is not None else None
    return [1.0 if w.worker_id == last else 0.0 for w in workers]


def speed(ctx, request, workers, stats) -> Scores:
    return stats.relative_speeds(workers)


SCORERS: dict[str, Callable[..., Scores]] = {
    "prefix-cache-hit": prefix_cache_hit,
    "queue-depth": queue_depth,
    "kv-utilization": kv_utilization,
    "active-requests": active_requests,
    "estimated-work": estimated_work,
    "session-affinity": session_affinity,
    "speed": speed,
}
