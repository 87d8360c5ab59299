"""A replica's speed for the `speed` and `estimated-work` scorers and the cold-start wait: independent of its load."""

from __future__ import annotations

from collections import Counter, deque

import pytest

from controlplane.events import RequestFinished
from controlplane.testing import make_context, make_trace, make_worker, replay_with
from controlplane.types import Decision, Request, RequestStatus
from plugins.routing_wait import ReadinessGate
from plugins.scorers import BatchTimes, ReplicaStats, estimated_work, speed


def _cost(k: int, prefilled: int, decoded: int) -> float:
    """Seconds of a batch on the reference hardware: 10 ms an iteration, 0.1 ms a prefilled, 0.2 ms a decoded token."""
    return 0.01 * k + 1e-4 * prefilled + 2e-4 * decoded


def _run_batches(stats: ReplicaStats, ctx, w, timed: int, seqs: int, slowness: float = 1.0) -> None:
    """Batches on ``w`` (``slowness`` x the reference time), ``timed`` of them timed (one in `BatchTimes.EVERY`),
    then one more decision to close the last: each prefills one prompt of 100-600 tokens and decodes ``seqs`` to
    ``seqs`` + 2 sequences 1-4 iterations."""
    n = timed * BatchTimes.EVERY
    for i in range(n + 1):
        prefilled = 100 + 100 * (i % 6)
        prompt = Request(f"{w.worker_id}-{i}-p", 0.0, prefilled, 1000, model=w.model)
        w.running = [Request(f"{w.worker_id}-{i}-{j}", 0.0, 100, 1000, model=w.model) for j in range(seqs + i % 3)]
        for r in w.running:
            r.num_computed_tokens = 100
        w.running.append(prompt)
        stats.observe(Decision(float(i), "cp_form_batch", "continuous-batching", "batch", w.worker_id, None,
                               {"batch": i, "prefill": 1, "prefill_tokens": prefilled, "decode": len(w.running) - 1,
                                "iterations": 8}), ctx)  # planned 8: the runs were cut short
        if i == n:
            break
        k = 1 + i % 5 % 4
        prompt.num_computed_tokens = prefilled
        for r in w.running:
            r.output_tokens += k
        w.busy_s += slowness * _cost(k, prefilled, k * len(w.running))


def _done(worker_id: str, tokens: int) -> RequestFinished:
    r = Request(f"done-{worker_id}", 0.0, tokens, 0, model="default")
    r.worker_id, r.first_token_s, r.status = worker_id, 1.0, RequestStatus.COMPLETED
    return RequestFinished(1.0, r)


def test_identical_replicas_read_the_same_speed_however_big_their_batches():
    # Tokens per busy second grow with the batch (an iteration's 10 ms is shared by more tokens): the busy replica
    # read 6x the idle one's, the scorer sent it still more traffic.
    idle, busy = make_worker("idle"), make_worker("busy")
    ctx = make_context(workers=[idle, busy])
    stats = ReplicaStats()
    _run_batches(stats, ctx, idle, 40, seqs=1)
    _run_batches(stats, ctx, busy, 40, seqs=64)
    relative = stats.relative([idle, busy])
    assert relative[0] == pytest.approx(relative[1], rel=1e-9)
    assert speed(None, None, [idle, busy], stats) == [1.0, 1.0]
    for w, seqs in ((idle, 1), (busy, 64)):  # what the old measure read: 1,000 vs 6,000-odd tokens per busy second
        stats.observe(_done(w.worker_id, int(w.busy_s * (1000 if seqs == 1 else 6000))), ctx)
    assert stats.throughput(busy) > 5 * stats.throughput(idle)
    # the cold-start wait takes the pooled tokens per busy second for both, not each its own
    waits = ReadinessGate.speeds([idle, busy], stats)
    assert waits[0] == pytest.approx(waits[1], rel=1e-9)


def test_a_replica_twice_as_slow_reads_half_as_fast_and_estimated_work_counts_it():
    fast, slow = make_worker("fast"), make_worker("slow")
    ctx = make_context(workers=[fast, slow])
    stats = ReplicaStats()
    _run_batches(stats, ctx, fast, 40, seqs=32)
    _run_batches(stats, ctx, slow, 40, seqs=2, slowness=2.0)  # slower, and less busy
    assert speed(None, None, [fast, slow], stats) == pytest.approx([1.0, 0.5], rel=1e-6)
    fast.waiting, slow.waiting = deque([Request("qa", 0.0, 1000, 0)]), deque([Request("qb", 0.0, 600, 0)])
    fast.running = slow.running = []
    # 1000 tokens at full speed beat 600 at half speed (1,200 token-equivalents)
    assert estimated_work(ctx, None, [fast, slow], stats) == [1.0, 0.0]


def test_a_replica_reads_as_the_pool_until_it_has_run_enough_batches():
    a, b = make_worker("a"), make_worker("b")
    ctx = make_context(workers=[a, b])
    stats = ReplicaStats()
    _run_batches(stats, ctx, a, 40, seqs=4)
    _run_batches(stats, ctx, b, BatchTimes.MIN_BATCHES - 1, seqs=4, slowness=3.0)
    assert stats.relative([a, b])[1] is None
    assert speed(None, None, [a, b], stats) == [1.0, 1.0]
    _run_batches(stats, ctx, b, BatchTimes.MIN_BATCHES, seqs=4, slowness=3.0)
    assert speed(None, None, [a, b], stats)[1] < 0.5


def _routes(weights: dict) -> tuple[Counter, list]:
    trace = make_trace(900, qps=14.0, prompt_tokens=1500, output_tokens=150, seed=3)
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 4}]},
                      plugins={"enabled": ["weighted-router", "continuous-batching", "fixed-replicas", "static-memory",
                                           "builtin-latency-models"],
                               "settings": {"weighted-router": {"weights": weights}}})
    routes = [d for d in res.decisions if d.action == "route"]
    return Counter(d.payload["worker"] for d in routes), routes


def test_in_a_replay_identical_replicas_score_equal_on_speed_and_it_changes_no_route():
    # 4 identical replicas: weighing speed beside queue depth sent traffic to the busiest (scores 0.36 to 1.0)
    with_speed, routes = _routes({"queue-depth": 1.0, "speed": 1.0})
    without, _ = _routes({"queue-depth": 1.0})
    assert {s["speed"] for d in routes for s in d.payload["scores"].values()} == {1.0}
    assert with_speed == without
