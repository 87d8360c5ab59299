"""Continuous batching (vLLM and Sarathi styles) and its KV-horizon arithmetic."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from controlplane.testing import make_context, make_requests, make_worker
from controlplane.types import UNLIMITED_KV_BLOCKS, RequestStatus
from plugins.batching import ContinuousBatching, kv_horizon


def _running(n: int, *, prompt: int = 100, output_done: int = 5, output: int = 50, prefix: str = "run"):
    reqs = make_requests(n, prompt_tokens=prompt, output_tokens=output, prefix=prefix)
    for r in reqs:
        r.status = RequestStatus.RUNNING
        r.num_computed_tokens = prompt
        r.output_tokens = output_done
    return reqs


def _plan(worker, **settings):
    plugin = ContinuousBatching(ContinuousBatching.Settings(**settings))
    return plugin.cp_form_batch(ctx=make_context(workers=[worker]), worker=worker)


def _brute_horizon(ctx: list[int], bs: int, blocks: int, max_iterations: int) -> int:
    c = np.asarray(ctx)
    for j in range(max_iterations):
        if int(((c + j + bs - 1) // bs).sum()) > blocks:
            return j
    return max_iterations


def test_kv_horizon_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(400):
        n = int(rng.integers(1, 8))
        bs = int(rng.choice([1, 4, 16]))
        ctx = [int(x) for x in rng.integers(1, 300, size=n)]
        need0 = sum(-(-c // bs) for c in ctx)
        blocks = need0 + int(rng.integers(0, 40))
        max_it = int(rng.integers(1, 200))
        assert kv_horizon(ctx, bs, blocks, max_it) == _brute_horizon(ctx, bs, blocks, max_it), (ctx, bs, blocks, max_it)
    assert kv_horizon([10, 20], 16, UNLIMITED_KV_BLOCKS, 77) == 77


def test_vllm_prefills_waiting_requests_first_come_first_served():
    w = make_worker(waiting=deque(make_requests(3, prompt_tokens=[300, 20, 100])), running=_running(2))
    plan = _plan(w)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("r0", 300), ("r1", 20), ("r2", 100)]
    assert plan.decode == () and plan.reason == "prefill 3 waiting"


def test_vllm_prefill_respects_the_padded_token_budget_and_sequence_limit():
    w = make_worker(waiting=deque(make_requests(4, prompt_tokens=[300, 20, 100, 10])), max_batch_tokens=700)
    plan = _plan(w)  # (k + 1) * longest <= 700: two requests of (padded) 300
    assert [n for _, n in plan.prefill] == [300, 20]
    w = make_worker(waiting=deque(make_requests(4, prompt_tokens=10)), running=_running(3), max_num_seqs=4)
    assert len(_plan(w).prefill) == 1


def test_vllm_decodes_everything_running_for_as_long_as_nothing_finishes():
    running = _running(3, output=50, output_done=5)
    running[1].output_tokens = 40  # 10 left
    w = make_worker(running=running)
    plan = _plan(w)
    assert plan.prefill == () and plan.decode == tuple(running)
    assert plan.max_iterations == 10
    assert _plan(w, max_iterations=4).max_iterations == 4


def test_vllm_decode_stops_where_the_kv_cache_would_run_out():
    running = _running(2, prompt=100, output_done=12)  # 112 tokens each: 7 blocks of 16
    w = make_worker(running=running, num_kv_blocks=15, num_kv_blocks_used=14)
    plan = _plan(w)
    ctx = [r.context_tokens for r in running]
    assert plan.max_iterations == _brute_horizon(ctx, 16, 15, 38) < 38


def test_vllm_preempts_the_newest_when_the_kv_cache_is_full():
    running = _running(3, prompt=160)  # 165 tokens: 11 blocks each
    w = make_worker(running=running, num_kv_blocks=15, num_kv_blocks_used=33)
    plan = _plan(w)
    assert plan.preempt == (running[2], running[1])  # newest first, until the rest fit
    assert plan.decode == (running[0],)
    assert "preempted 2 newest" in plan.reason


def test_vllm_waiting_request_that_cannot_fit_gets_an_empty_plan_with_the_reason():
    w = make_worker(waiting=deque(make_requests(1, prompt_tokens=9000)))
    plan = _plan(w, long_prompts="reject")
    assert plan.prefill == plan.decode == () and "9000 prompt tokens exceed the batch budget" in plan.reason
    w = make_worker(waiting=deque(make_requests(1, prompt_tokens=4000)), num_kv_blocks=100)
    assert "needs 250 KV blocks, 100 free" in _plan(w).reason


def test_vllm_prefills_a_prompt_over_the_token_budget_alone_by_default():
    long, short = make_requests(2, prompt_tokens=[9000, 100])
    w = make_worker(waiting=deque([long, short]))
    plan = _plan(w)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("r0", 9000)] and "alone" in plan.reason
    w = make_worker(waiting=deque([short, long]))
    assert [r.request_id for r, _ in _plan(w).prefill] == ["r1"]  # never batched with others


def test_sarathi_mixes_decodes_with_chunked_prefills_under_the_budget():
    decoding = _running(2)
    w = make_worker(waiting=deque(make_requests(2, prompt_tokens=[300, 500])), running=list(decoding))
    plan = _plan(w, policy="sarathi", chunk_size=256)
    assert plan.decode == tuple(decoding)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("r0", 254)]  # 256 - 2 decodes
    # The partly prefilled request continues first next time.
    r0 = plan.prefill[0][0]
    w.waiting.popleft()
    r0.status = RequestStatus.RUNNING
    r0.num_computed_tokens = 254
    w.running.append(r0)
    plan = _plan(w, policy="sarathi", chunk_size=256)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("r0", 46), ("r1", 208)]
    assert plan.decode == tuple(decoding)


def test_sarathi_with_nothing_to_do_says_so():
    w = make_worker(waiting=deque(make_requests(1, prompt_tokens=4000)), num_kv_blocks=100)
    plan = _plan(w, policy="sarathi")
    assert plan.prefill == plan.decode == () and plan.reason


def test_settings_are_validated():
    with pytest.raises(ValueError):
        ContinuousBatching.Settings(policy="fifo")
    with pytest.raises(ValueError):
        ContinuousBatching.Settings(watermark=1.0)


def test_vllm_max_padding_keeps_a_padded_prefill_within_its_ratio_passing_over_what_does_not_fit():
    prompts = [100, 20, 90, 250, 80, 10]
    w = make_worker(waiting=deque(make_requests(6, prompt_tokens=prompts)))
    assert [n for _, n in _plan(w).prefill] == prompts  # off by default: one batch padded to 250
    plan = _plan(w, max_padding=1.25)
    # in queue order against the batch so far: 100 heads it; 20 would pad 2 x 100 = 200 > 1.25 x 120 (passed
    # over); 90: 200 <= 1.25 x 190; 250: 750 > 1.25 x 440 (passed over); 80: 300 <= 1.25 x 270; 10: 400 > 350
    assert [n for _, n in plan.prefill] == [100, 90, 80]
    assert plan.max_iterations == 1  # requests still waiting: no decodes planned behind the prefill
    padded = len(plan.prefill) * max(n for _, n in plan.prefill)
    assert padded <= 1.25 * sum(n for _, n in plan.prefill)
    # the head of the queue always goes, however long; the next batch starts from what was passed over
    rest = deque(r for r in w.waiting if r.prompt_tokens in (20, 250, 10))
    w2 = make_worker(waiting=rest)
    assert [n for _, n in _plan(w2, max_padding=1.25).prefill] == [20]
    assert [n for _, n in _plan(w2, max_padding=5.0).prefill] == [20, 250, 10]


def test_vllm_max_padding_stops_looking_after_the_lookahead():
    from plugins.batching import PADDING_LOOKAHEAD

    prompts = [10] + [200] * PADDING_LOOKAHEAD + [10]
    w = make_worker(waiting=deque(make_requests(len(prompts), prompt_tokens=prompts)), max_num_seqs=1000,
                    max_batch_tokens=10**6)
    assert [n for _, n in _plan(w, max_padding=1.25).prefill] == [10]
    with pytest.raises(ValueError, match="max_padding"):
        ContinuousBatching.Settings(max_padding=0.5)


def test_vllm_max_padding_passes_over_a_prompt_before_its_kv_blocks_can_stop_the_batch():
    # 40 tokens (3 blocks), then 400 (25 blocks: more than free), then 30: capped, the 400 is passed over
    # for its padding and the 30 still joins; uncapped, the 400 stops the batch on KV blocks
    w = make_worker(waiting=deque(make_requests(3, prompt_tokens=[40, 400, 30])), num_kv_blocks=20,
                    num_kv_blocks_used=0)
    assert [n for _, n in _plan(w, max_padding=1.25).prefill] == [40, 30]
    assert [n for _, n in _plan(w).prefill] == [40]


def test_the_priority_batcher_sorts_a_queue_only_where_sorting_changes_its_order():
    """`PriorityContinuousBatching` serves by priority, then age. A queue of one priority class already in arrival
    order (an overloaded replica's usual queue, thousands long) is served as it stands, without a sort for every
    batch; another is sorted; either way the plan is the sorted queue's."""
    from plugins.batching import PriorityContinuousBatching, in_priority_order, priority_then_age

    plugin = PriorityContinuousBatching(PriorityContinuousBatching.Settings())
    reqs = make_requests(6, prompt_tokens=50, output_tokens=10)
    for i, r in enumerate(reqs):
        r.arrival_s = float(i // 2)  # (ties keep the queue's order: the sort is stable)
    w = make_worker(waiting=deque(reqs))
    assert in_priority_order(w.waiting) and plugin._queue(w) is w.waiting
    w.waiting.appendleft(w.waiting.pop())  # a later arrival at the head: out of order
    assert not in_priority_order(w.waiting)
    order = plugin._queue(w)
    assert order is not w.waiting and order == sorted(w.waiting, key=priority_then_age)
    assert order == reqs[:4] + [reqs[5], reqs[4]]  # (the tie at 2.0 s keeps the queue's order)
    w.waiting.popleft()
    w.waiting.append(reqs[-1])  # back in arrival order
    assert in_priority_order(w.waiting) and plugin._queue(w) is w.waiting
    reqs[2].priority = 1
    w = make_worker(waiting=deque(reqs))  # two classes: sorted, the more important first
    assert not in_priority_order(w.waiting) and plugin._queue(w) == [reqs[2], *reqs[:2], *reqs[3:]]
    assert not in_priority_order(deque(reqs))  # a plain deque keeps no count: sorted


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_the_watermark_keeps_blocks_for_running_decodes_only(policy):
    """A prompt needing 1,019 of 1,024 blocks (the core admitted it: prompt + max_tokens fit) waited for an empty
    replica, where the watermark (1%: 10 blocks) still refused it: 'needs 1019 KV blocks, 1024 free', and the
    core rejected it. With nothing running the watermark keeps nothing; with decodes running it keeps its blocks,
    and the reason says so."""
    big = make_requests(1, prompt_tokens=16300, output_tokens=1, prefix="big")
    w = make_worker(waiting=deque(big), num_kv_blocks=1024, num_kv_blocks_used=0, max_batch_tokens=20000)
    plan = _plan(w, policy=policy, chunk_size=20000)
    assert [(r.request_id, n) for r, n in plan.prefill] == [("big0", 16300)]
    running = _running(1, prompt=100, output_done=5)  # 7 blocks held; 1,023 free: enough, but for the watermark
    w = make_worker(waiting=deque(big), running=running, num_kv_blocks=1030, num_kv_blocks_used=7,
                    max_batch_tokens=20000)
    plan = _plan(w, policy=policy, chunk_size=20000)
    assert plan.prefill == () and [r.request_id for r in plan.decode] == ["run0"]
    if policy == "vllm":
        assert plan.reason == ("decode all running; waiting: big0 needs 1019 KV blocks, 1023 free of which the "
                               "watermark keeps 10 for running decodes")
    # a second prompt in the same batch leaves the watermark free again
    two = make_requests(2, prompt_tokens=[8000, 8000], output_tokens=1, prefix="two")
    w = make_worker(waiting=deque(two), num_kv_blocks=1004, num_kv_blocks_used=0, max_batch_tokens=20000)
    assert [r.request_id for r, _ in _plan(w, policy=policy, chunk_size=20000).prefill] == ["two0"]


def test_a_request_the_core_admits_is_served_not_refused_for_the_watermark():
    """The capacity engineer's trace on one L4 (Llama-2-7B: 1,024 blocks of 16): d's 16,300-token prompt waited
    14 s behind a, then was refused 'does not fit its worker: d needs 1019 KV blocks, 1024 free'."""
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest("a", 0.0, 15000, 100), TraceRequest("d", 1.0, 16300, 1), TraceRequest("e", 2.0, 100, 10)]
    result = replay_with(trace=trace, plugins={
        "enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                    "builtin-latency-models"]},
        cluster={"models": [{"name": "default", "replicas": 1, "latency_model": "roofline",
                             "latency": {"model": "meta-llama/Llama-2-7b-hf", "gpu": "l4"}}]})
    assert result.summary["num_completed"] == 3 and result.summary["num_rejected"] == 0
