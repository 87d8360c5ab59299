"""The core's batching (`controlplane.batch_scheduling`): preemption when the KV cache is full,
a request no batch can hold, a plan that waits (``wake_after_s``). Unusable plans: test_batch_plan_checks."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import BatchPlan
from controlplane.testing import make_trace, replay_with
from controlplane.types import ReasonCode, RequestStatus
from sim.traces import TraceRequest
from tests.fixtures.common import assert_conserved, assert_timings_consistent


KV_TIGHT = {"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 150}]}


def test_kv_budget_preempts_and_preempted_requests_complete():
    res = replay_with(trace=make_trace(200, qps=6, output_tokens=128), cluster=KV_TIGHT)
    preempted = [r for r in res.requests if r.num_preemptions]
    completed = [r for r in preempted if r.status is RequestStatus.COMPLETED]
    assert len(completed) > 10
    assert all(r.output_tokens == r.max_output_tokens for r in completed)
    # The only other outcome: a request whose context outgrew the whole cache cannot come back.
    for r in preempted:
        if r.status is not RequestStatus.COMPLETED:
            assert r.status is RequestStatus.REJECTED and "KV blocks" in r.reason
            assert r.prompt_tokens + r.max_output_tokens > 150 * 16
    evictions = [d for d in res.decisions if d.action == "preempt"]
    assert len(evictions) == sum(r.num_preemptions for r in preempted)
    assert all("KV cache full" in d.reason for d in evictions)
    assert {d.plugin for d in evictions} == {"continuous-batching"}  # the plan's maker, not "core"
    plans = [d for d in res.decisions if d.action == "memory_plan"]
    assert plans and plans[0].payload["num_kv_blocks"] == 150
    assert_conserved(res.summary, res.requests)
    assert_timings_consistent(res.requests)


def test_summary_counts_every_preemption():
    res = replay_with(trace=make_trace(200, qps=6, output_tokens=128), cluster=KV_TIGHT)
    evictions = [d for d in res.decisions if d.action == "preempt"]
    assert res.summary["num_preemptions"] == len(evictions)


def test_a_request_too_big_for_any_batch_is_rejected_with_a_reason():
    trace = make_trace(20, qps=5)
    trace.insert(3, dataclasses.replace(trace[3], request_id="huge", prompt_tokens=20_000))
    res = replay_with(trace=trace, plugins={"settings": {"continuous-batching": {"long_prompts": "reject"}}})
    by_id = {r.request_id: r for r in res.requests}
    huge = by_id["huge"]
    assert huge.status is RequestStatus.REJECTED
    assert huge.reason.startswith("does not fit its worker: ") and "20000 prompt tokens exceed" in huge.reason
    assert huge.reason.endswith(f"(worker {huge.worker_id})")
    assert sum(r.status is RequestStatus.COMPLETED for r in res.requests) == 20
    reject = [d for d in res.decisions if d.action == "reject"]
    assert [(d.subject, d.hook, d.plugin) for d in reject] == [("huge", "cp_form_batch", "continuous-batching")]


def test_rejections_too_big_for_any_batch_count_as_one_cause_in_the_summary():
    """Four replicas: the summary listed 'does not fit worker default-0/1/2/3' as four causes."""
    trace = make_trace(40, qps=5)
    for i in (3, 9, 15, 21, 27):
        trace[i] = dataclasses.replace(trace[i], prompt_tokens=20_000)
    res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 4}]},
                      plugins={"settings": {"continuous-batching": {"long_prompts": "reject"}}})
    assert len({r.worker_id for r in res.requests if r.status is RequestStatus.REJECTED}) > 1
    assert res.summary["reject_reasons"] == {"does not fit its worker": 5}


class EvictOnce(Plugin):
    """Evicts the newest of two decoding requests once, on purpose: its preemption was recorded as the core's,
    "KV cache full: recompute later", with a cache far from full."""

    name = "evict-once"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.done = False

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if len(worker.running) >= 2 and not self.done and all(r.is_decoding for r in worker.running):
            self.done = True
            v = worker.running[-1]
            return BatchPlan(decode=tuple(r for r in worker.running if r is not v), preempt=(v,),
                             reason=f"evicted on purpose: {v.request_id}")
        return None


def test_a_preemption_the_plan_asked_for_is_recorded_as_the_plugins_with_its_reason():
    trace = [TraceRequest("A", 0.0, 8, 10), TraceRequest("B", 0.0, 8, 10)]
    res = replay_with(EvictOnce(), trace=trace, cluster={"models": [{"name": "default", "replicas": 1}]},
                      sim={"exact": True})
    evictions = [d for d in res.decisions if d.action == "preempt"]
    assert len(evictions) == res.summary["num_preemptions"] == 1
    d = evictions[0]
    assert (d.hook, d.plugin, d.reason) == ("cp_form_batch", "evict-once", f"evicted on purpose: {d.subject}")
    assert d.payload == {"worker": "default-0"}
    assert res.summary["num_completed"] == 2


class StallOnce(Plugin):
    """Returns an empty plan once while a request runs and another waits: the running one failed as stalled (right),
    but the waiting one sat until the next tick, the stall was no plugin error, and the failure's reason put the
    worker before its colon (a summary key per worker)."""

    name = "stall-once"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.done = False

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.running and worker.waiting and not self.done:
            self.done = True
            return BatchPlan(reason="oops")
        return None


_LINEAR = {"models": [{"name": "default", "replicas": 1, "latency_model": "linear",
                       "latency": {"base_s": 0.01, "prefill_s_per_token": 0, "decode_s_per_seq": 0,
                                   "decode_s_per_context_token": 0}}]}


@pytest.mark.parametrize("exact", [False, True])
def test_a_stall_is_the_plugins_error_and_the_waiting_requests_are_planned_at_once(exact):
    trace = [TraceRequest("A", 0.0, 8, 10), TraceRequest("B", 0.0, 8, 10)]
    res = replay_with(StallOnce(), trace=trace, cluster=_LINEAR, sim={"exact": exact})
    by_id = {r.request_id: r for r in res.requests}
    a, b = by_id["A"], by_id["B"]
    assert a.status is RequestStatus.FAILED and a.reason_code is ReasonCode.STALLED
    assert a.reason == "batching policy stalled: stall-once planned no batch on worker default-0 with 1 running: oops"
    assert b.status is RequestStatus.COMPLETED
    assert b.first_token_s == pytest.approx(0.02)  # prefilled as A failed (0.01), not at the next tick (1.01)
    errors = [d for d in res.decisions if d.is_error]
    assert [(d.hook, d.plugin, d.subject) for d in errors] == [("cp_form_batch", "stall-once", "default-0")]
    assert errors[0].reason.startswith("ValueError: an empty BatchPlan for worker default-0 while 1 requests run")
    assert res.summary["num_plugin_errors"] == 1
    assert res.summary["reject_reasons"] == {"batching policy stalled": 1}
    assert_conserved(res.summary, res.requests)


class WaitForFour(Plugin):
    """Dynamic batching: hold prefills until four requests wait or the oldest waited 0.5 s."""

    name = "wait-for-four"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.running or len(worker.waiting) >= 4:
            return None
        deadline = worker.waiting[0].arrival_s + 0.5
        if ctx.now_s >= deadline:
            return None
        return BatchPlan(wake_after_s=deadline - ctx.now_s, reason="waiting for a fuller batch")


def test_wake_after_s_delays_the_batch_until_the_wake_up():
    from sim.traces import TraceRequest

    # Two lone requests, then a burst of four.
    trace = [TraceRequest("a", 0.0, 64, 4), TraceRequest("b", 2.0, 64, 4)] + [
        TraceRequest(f"burst{i}", 4.0 + 0.01 * i, 64, 4) for i in range(4)
    ]
    res = replay_with(WaitForFour(), trace=trace, cluster={"models": [{"name": "default", "replicas": 1}]})
    by_id = {r.request_id: r for r in res.requests}
    assert by_id["a"].scheduled_s == pytest.approx(0.5)
    assert by_id["b"].scheduled_s == pytest.approx(2.5)
    # The fourth arrival fills the batch: all four start together, without waiting.
    assert [by_id[f"burst{i}"].scheduled_s for i in range(4)] == [pytest.approx(4.03)] * 4
    first = [d for d in res.decisions if d.action == "batch"][0]
    assert first.time_s == pytest.approx(0.5)


def test_a_request_bigger_than_any_replica_s_kv_cache_is_refused_at_its_arrival():
    """Prompt + max output tokens over the whole planned KV cache of every replica can never complete:
    refused when it arrives, not after decoding until its context outgrows the cache (a trace row of
    2e9 output tokens ran six simulated hours and stretched the run's span, GPU-hours and cost)."""
    trace = make_trace(20, qps=5, output_tokens=16)
    trace.insert(3, dataclasses.replace(trace[3], request_id="huge", output_tokens=150 * 16))
    res = replay_with(trace=trace, cluster=KV_TIGHT)
    huge = {r.request_id: r for r in res.requests}["huge"]
    assert huge.status is RequestStatus.REJECTED and huge.output_tokens == 0 and huge.worker_id is None
    assert huge.reason.startswith(f"does not fit: prompt {huge.prompt_tokens} + max_tokens 2400 tokens need more KV "
                                  "cache than any default replica holds (2400 tokens)")
    assert huge.reason_code is ReasonCode.DOES_NOT_FIT
    assert sum(r.status is RequestStatus.COMPLETED for r in res.requests) == 20
    assert res.summary["sim_span_s"] < 10


def _decoded_by_decisions(decisions):
    """Decode tokens the batch decisions say ran: ``decode`` in the first iteration (every iteration of a decode-only
    batch), ``then_decode`` in each later one, for the iterations a ``batch_cut`` says ran, else those planned."""
    ran = {d.payload["batch"]: d.payload["iterations"] for d in decisions if d.action == "batch_cut"}
    total = 0
    for d in decisions:
        if d.action == "batch":
            p = d.payload
            k = ran.get(p["batch"], p["iterations"])
            assert k <= p["iterations"]
            total += p["decode"] + (k - 1) * p["then_decode"] if p["prefill"] else p["decode"] * k
    return total


def test_batch_decisions_say_what_ran_when_a_multi_iteration_batch_is_cut_short():
    # The fast mode runs a decode batch for many iterations and cuts it short when a request joins: its `batch`
    # decision says the plan, a `batch_cut` the iterations run. (The export's decode x iterations was 21% above the
    # decode tokens generated.)
    res = replay_with(trace=make_trace(200, qps=8, output_tokens=96, seed=3))
    cuts = [d for d in res.decisions if d.action == "batch_cut"]
    assert cuts and all(d.plugin == "core" and d.payload["iterations"] >= 1 for d in cuts)
    first_tokens = sum(1 for r in res.requests if r.output_tokens)  # each prompt's prefill samples one token
    assert _decoded_by_decisions(res.decisions) == sum(r.output_tokens for r in res.requests) - first_tokens
    exact = replay_with(trace=make_trace(200, qps=8, output_tokens=96, seed=3), sim={"exact": True})
    assert not [d for d in exact.decisions if d.action == "batch_cut"]
    assert _decoded_by_decisions(exact.decisions) == _decoded_by_decisions(res.decisions)
