"""The prefill time per prompt token is measured only over spans in which prefill held the queue back
(`plugins.prefill_rate`): not while requests wait for batch slots or KV blocks, nor while they merely arrived during
an iteration that the next one takes them all in."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.testing import make_context, make_requests, make_worker, replay_with
from controlplane.types import RequestStatus
from plugins.admission import QueueLimit
from plugins.finish_time import FinishTimes
from sim.traces.record import TraceRequest


def _running(n: int, prompt_tokens: int = 58, prefix: str = "run"):
    rs = make_requests(n, prefix=prefix, prompt_tokens=prompt_tokens, model="default")
    for r in rs:
        r.status, r.scheduled_s, r.num_computed_tokens = RequestStatus.RUNNING, 0.0, prompt_tokens
        r.output_tokens, r.max_output_tokens = 1, 400
    return rs


def _prompts(n: int, tokens: int, prefix: str = "q"):
    rs = make_requests(n, prefix=prefix, prompt_tokens=tokens, model="default")
    for r in rs:
        r.max_output_tokens = 60
    return rs


def _join(w, r, at: float) -> None:
    """``r`` leaves the queue and joins the batch, its prompt prefilled."""
    w.waiting.remove(r)
    r.status, r.scheduled_s, r.num_computed_tokens = RequestStatus.RUNNING, at, r.prompt_tokens
    w.running.append(r)


def _iteration(ft: FinishTimes, w, at: float, tokens: int = 10) -> None:
    """A batch formed on ``w``; its running requests made ``tokens`` each; a look at ``at``."""
    w.current_batch_id = (w.current_batch_id or 0) + 1
    for r in w.running:
        r.output_tokens += tokens
    ft.look(w, at)


def _slot_bound(ft: FinishTimes) -> tuple:
    """A burst on a replica of 4 batch slots, all taken, 50 ms an iteration: each 1.6-s span one request finishes
    and the head of the queue (58 prompt tokens) takes its slot. Measured as the span over the tokens prefilled in it
    (until 2026-12-07), that was 1.6 s / 58 tokens, 27.6 ms a prompt token."""
    w = make_worker("tiny-0", running=_running(4), waiting=deque(_prompts(6, 58)), max_num_seqs=4, current_batch_id=0)
    at = 0.0
    ft.look(w, at)
    for _ in range(5):
        at += 1.6
        done = w.running.pop(0)
        done.status = RequestStatus.COMPLETED
        ft.finished(done)
        _join(w, w.waiting[0], at - 0.8)
        _iteration(ft, w, at, tokens=32)
    return w, at


def test_requests_waiting_for_batch_slots_measure_no_prefill_time():
    ft = FinishTimes()
    w, at = _slot_bound(ft)
    assert ft.iteration_s("default", 4, at) == pytest.approx(0.05)  # the decode is timed
    assert ft.prefill_s("default", at) is None  # (until 2026-12-07: 27.6 ms a prompt token)


def test_after_a_burst_that_waited_for_batch_slots_ten_requests_arriving_together_near_idle_are_admitted():
    """The soak test's daemon: 4 of 10 requests arriving together near idle were refused as `predicted to finish in
    25.0 s > max_finish_s 24 s (60 tokens at 103 ms per iteration, 544 prompt tokens at 34532 us each ...)`, at a
    prefill time measured 26 s before during a burst that waited for batch slots; the 6 admitted finished in 1.5 s."""
    ft = FinishTimes()
    w, at = _slot_bound(ft)
    plugin = QueueLimit(QueueLimit.Settings(max_finish_s=24))
    plugin._finish = ft
    w.running, w.waiting, w.max_num_seqs = w.running[:1], deque(), 16  # the burst is over: one request runs
    at += 26.0
    refused = []
    for r in _prompts(10, 544, "together"):
        d = plugin.cp_admit_request(ctx=make_context(workers=[w], now_s=at), request=r)
        if d is not None and not d.admit:
            refused.append(d.reason)
        else:
            r.worker_id = w.worker_id
            w.waiting.append(r)  # routed there
    assert refused == []


def test_requests_that_arrived_during_an_iteration_and_all_join_the_next_measure_no_prefill_time():
    """Live, a look comes at every iteration: the requests that arrived during it wait at its look and the next
    iteration takes them all. Waiting at every look, they are not held back by prefill: the iterations are decodes
    with a few short prompts joining (until 2026-12-07 measured at 0.5 s / 100 tokens, 5 ms a prompt token)."""
    ft = FinishTimes()
    w = make_worker("tiny-0", running=_running(8), max_num_seqs=64, current_batch_id=0)
    at = 0.0
    for i in range(10):
        for r in list(w.waiting):  # the next batch takes every request that waited
            _join(w, r, at)
        w.waiting.extend(_prompts(2, 50, f"arrived{i}-"))  # arrived during the iteration
        at += 0.5
        _iteration(ft, w, at, tokens=1)
    assert ft.prefill_s("default", at) is None


def test_a_queue_waiting_for_kv_blocks_measures_no_prefill_time():
    """Batch slots free, but the KV blocks of a request that finished hold only the head of the queue: the queue
    waits for the decodes, not for prefill (until 2026-12-07 measured at 0.5 s / 2,000 tokens)."""
    ft = FinishTimes()
    w = make_worker(running=_running(4, prompt_tokens=2000), waiting=deque(_prompts(6, 2000)), max_num_seqs=64,
                    kv_block_size=16, num_kv_blocks=4 * 126 + 100, current_batch_id=0)  # room for no 2,000-token prompt
    ft.look(w, 0.0)
    for at in (0.5, 1.0, 1.5):
        done = w.running.pop(0)  # its blocks taken by the head of the queue
        done.status = RequestStatus.COMPLETED
        ft.finished(done)
        _join(w, w.waiting[0], at - 0.25)
        _iteration(ft, w, at)
    assert ft.prefill_s("default", 1.5) is None
    w.num_kv_blocks = 10 * 126 + 100  # room for the head: the queue is left behind for want of prefill budget
    _join(w, w.waiting[0], 1.6)
    _iteration(ft, w, 2.0)
    assert ft.prefill_s("default", 2.0) == pytest.approx(0.5 / 2000, rel=1e-12)


def test_a_queue_left_behind_with_room_measures_the_span_over_the_tokens_prefilled():
    ft = FinishTimes()
    w = make_worker(running=_running(4), waiting=deque(_prompts(6, 2000)), max_num_seqs=64, current_batch_id=0)
    ft.look(w, 0.0)
    _join(w, w.waiting[0], 0.1)  # the batch took one prompt, left five
    _iteration(ft, w, 1.0)
    assert ft.prefill_s("default", 1.0) == pytest.approx(1.0 / 2000, rel=1e-12)


def test_looks_within_one_batch_keep_the_span_open_until_a_later_batch():
    """A batch reports its prefill at its end: a look inside a long prefill batch sees nothing prefilled. The span
    goes on to a look in a later batch, whose time and tokens count together (1 s for 4,000 tokens, not the half)."""
    ft = FinishTimes()
    w = make_worker(running=_running(4), waiting=deque(_prompts(6, 2000)), max_num_seqs=64, current_batch_id=1)
    ft.look(w, 0.0)
    ft.look(w, 0.5)  # still batch 1: nothing reported yet
    assert ft.prefill_s("default", 0.5) is None
    for r in list(w.waiting)[:2]:
        _join(w, r, 0.0)
    _iteration(ft, w, 1.0)
    assert ft.prefill_s("default", 1.0) == pytest.approx(1.0 / 4000, rel=1e-12)


def test_replayed_a_burst_that_waited_for_batch_slots_does_not_refuse_a_burst_arriving_later():
    """The simulator: 6 long answers on 4 batch slots (2 wait for slots), then 30 s later 10 requests at once on the
    idle replica. Until 2026-12-07 the wait for slots was measured as 4,970 us a prompt token (the linear latency
    model's is 100 us) and 3 of the 10 were refused (`predicted to finish in 24.3 s > max_finish_s 24 s (60 tokens
    at 7 ms per iteration, 4800 prompt tokens at 4970 us each ...)`); the 7 admitted finished within 1.2 s."""
    trace = [TraceRequest(f"long{i}", 0.3 * i, 600, 400) for i in range(6)]
    trace += [TraceRequest(f"burst{i}", 30.0, 600, 60) for i in range(10)]
    res = replay_with(QueueLimit(QueueLimit.Settings(max_finish_s=24)), trace=trace,
                      plugins={"enabled": ["least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                                           "builtin-latency-models"]},
                      cluster={"models": [{"name": "default", "replicas": 1, "max_num_seqs": 4}]})
    assert res.summary["num_plugin_errors"] == 0
    burst = [r for r in res.requests if r.request_id.startswith("burst")]
    assert [r.status for r in burst] == [RequestStatus.COMPLETED] * 10
    assert max(r.finish_s - r.arrival_s for r in burst) < 3.0
