"""`controlplane.testing.make_worker`'s running requests are in the state a run leaves them in, so a batching plan
tested on the worker is checked as in a run."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.batch_plan_checks import plan_error
from controlplane.decisions import BatchPlan
from controlplane.testing import make_context, make_requests, make_worker, put_running
from controlplane.types import RequestStatus
from plugins.batching import ContinuousBatching


def test_running_requests_are_prefilled_running_and_their_kv_blocks_counted():
    """They were WAITING with nothing computed and no blocks counted: a plan decoding them was refused ('decode of
    r0, which is not running on worker default-0'), the batcher passing its unit test and failing in a replay."""
    reqs = make_requests(2, prompt_tokens=[10, 40], output_tokens=[5, 9], interval_s=0.5)
    w = make_worker(running=reqs, num_kv_blocks=100, kv_block_size=16)
    for r in reqs:
        assert r.status is RequestStatus.RUNNING and r.worker_id == "default-0" and r.is_decoding
        assert r.num_computed_tokens == r.prompt_tokens and r.output_tokens == 1  # the prefill sampled a token
        assert r.scheduled_s == r.first_token_s == r.arrival_s
    assert w.num_kv_blocks_used == 1 + 3  # 11 and 41 tokens, as the core counts them
    assert plan_error(BatchPlan(decode=tuple(reqs), max_iterations=4), w) is None
    plan = ContinuousBatching().cp_form_batch(ctx=make_context(workers=[w]), worker=w)
    assert plan.decode == tuple(reqs) and plan_error(plan, w) is None


def test_progress_given_is_kept_and_a_running_status_means_its_prefill_runs_now():
    chunk, decoding, joining = make_requests(3, prompt_tokens=100, output_tokens=50)
    chunk.num_computed_tokens = 40  # a chunked prefill part done
    decoding.num_computed_tokens, decoding.output_tokens = 100, 7
    joining.status = RequestStatus.RUNNING  # its prefill batch runs now
    w = make_worker(running=[chunk, decoding, joining], waiting=deque(make_requests(1, prefix="q")))
    assert [(r.num_computed_tokens, r.output_tokens) for r in w.running] == [(40, 0), (100, 7), (0, 0)]
    assert chunk.first_token_s is None and decoding.first_token_s == decoding.arrival_s
    assert w.waiting[0].status is RequestStatus.WAITING and w.waiting[0].worker_id == "default-0"
    assert w.num_kv_blocks_used == 0  # no KV budget: a run does not count them either


def test_a_kv_cache_that_filled_up_counts_more_than_it_has_as_in_a_run():
    """A context counts the token its next decode computes: a full cache holds more than it has, the batcher
    preempts."""
    running = make_requests(3, prompt_tokens=160, output_tokens=50)
    w = make_worker(running=running, num_kv_blocks=30)
    assert w.num_kv_blocks_used == 33
    assert ContinuousBatching().cp_form_batch(ctx=make_context(workers=[w]), worker=w).preempt == (running[2],)
    assert make_worker(running=make_requests(1), num_kv_blocks=30, num_kv_blocks_used=20).num_kv_blocks_used == 20


@pytest.mark.parametrize("setup, said", [
    (lambda r: setattr(r, "max_output_tokens", 1), "r0 has generated 1 of its 1 output tokens: a run completes it"),
    (lambda r: setattr(r, "status", RequestStatus.COMPLETED), "r0 is completed, not waiting or running"),
    (lambda r: setattr(r, "worker_id", "default-1"), "r0 is on worker default-1, not default-0"),
])
def test_a_running_request_a_run_never_has_is_refused_saying_why(setup, said):
    (r,) = make_requests(1)
    setup(r)
    with pytest.raises(ValueError, match=said):
        make_worker(running=[r])


def test_a_request_twice_or_fewer_blocks_than_held_are_refused():
    reqs = make_requests(2)
    with pytest.raises(ValueError, match="r0 is on worker default-0 twice"):
        make_worker(waiting=deque(reqs[:1]), running=reqs)
    with pytest.raises(ValueError, match="num_kv_blocks_used=1, fewer than the 18 KV blocks its running"):
        make_worker(running=make_requests(2, prompt_tokens=128), num_kv_blocks=100, num_kv_blocks_used=1)
    assert put_running(make_requests(1)[0], "w-1").worker_id == "w-1"
