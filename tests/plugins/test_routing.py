"""Routing: least loaded and round robin."""

from __future__ import annotations

from collections import deque

from controlplane import hookimpl
from controlplane.events import WorkerChanged
from controlplane.testing import ScaleCycle, make_context, make_requests, make_trace, make_worker, replay_with
from controlplane.types import WorkerState
from plugins.routing import LeastLoaded, RoundRobin
from plugins.routing_wait import ReadinessGate


def test_least_loaded_picks_the_fewest_queued_plus_running():
    busy = make_worker("default-0", waiting=deque(make_requests(2)), running=make_requests(1, prefix="x"))
    idle = make_worker("default-1", running=make_requests(1, prefix="y"))
    d = LeastLoaded().cp_route_request(ctx=make_context(workers=[busy, idle]), request=make_requests(1)[0],
                                       workers=[busy, idle])
    assert d.worker_id == "default-1" and d.reason == "least loaded (1 queued+running)"


def test_least_loaded_breaks_ties_by_cluster_order_not_kv_use():
    # KV use is recounted only between batches, so tie-breaking on it would make the fast and
    # exact simulation modes route differently; ties go to the first worker instead.
    a = make_worker("default-0", num_kv_blocks_used=30)
    b = make_worker("default-1", num_kv_blocks_used=10)
    d = LeastLoaded().cp_route_request(ctx=make_context(workers=[a, b]), request=make_requests(1)[0], workers=[a, b])
    assert d.worker_id == "default-0"

def test_round_robin_cycles_and_keeps_its_state_per_instance():
    workers = [make_worker(f"default-{i}") for i in range(3)]
    ctx = make_context(workers=workers)
    rr = RoundRobin()
    picks = [rr.cp_route_request(ctx=ctx, request=r, workers=workers).worker_id for r in make_requests(5)]
    assert picks == ["default-0", "default-1", "default-2", "default-0", "default-1"]
    assert RoundRobin().cp_route_request(ctx=ctx, request=make_requests(1)[0], workers=workers).worker_id == "default-0"


def test_round_robin_keeps_one_cycle_per_model():
    # two models' requests in turn: one shared counter sent every a to a-0 and every b to b-1
    a = [make_worker(f"a-{i}", model="a") for i in range(2)]
    b = [make_worker(f"b-{i}", model="b") for i in range(2)]
    ctx = make_context(workers=[*a, *b])
    rr = RoundRobin()
    picks = [rr.cp_route_request(ctx=ctx, request=r, workers=a if i % 2 == 0 else b).worker_id
             for i, r in enumerate(make_requests(8))]
    assert picks == ["a-0", "b-0", "a-1", "b-1", "a-0", "b-0", "a-1", "b-1"]


class _CheckedLeastLoaded(LeastLoaded):
    """least-loaded with its load index on from one candidate, each choice checked against a scan."""

    name = "checked-least-loaded"
    INDEX_FROM = 1

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.checked = self.indexed = 0
        self.differ = []  # (request, chosen, the scan's): an assert here would be caught as a plugin error

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        d = super().cp_route_request(ctx=ctx, request=request, workers=workers)
        if all(w.state is not WorkerState.STARTING for w in workers):
            loads = [w.load for w in workers]
            want = workers[loads.index(min(loads))]
            if d.worker_id != want.worker_id:
                self.differ.append((request.request_id, d.worker_id, want.worker_id))
            self.checked += 1
            self.indexed += self.index._heaps is not None
        return d


def test_least_loaded_index_routes_as_the_scan_does_while_replicas_come_and_go():
    router = _CheckedLeastLoaded()
    res = replay_with(router, ScaleCycle(), trace=make_trace(600, qps=12.0, seed=4),
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0}]})
    assert res.summary["num_completed"] == 600
    assert router.differ == [] and res.summary["num_plugin_errors"] == 0
    assert router.checked > 300 and router.indexed == router.checked
    assert len({r.worker_id for r in res.requests}) > 3
    assert any(d.action == "scale" for d in res.decisions)


class _TokenCheckedLeastLoaded(LeastLoaded):
    """least-loaded by tokens, each candidate's kept queue total checked against a walk of its queue."""

    name = "token-checked-least-loaded"

    def __init__(self, settings=None) -> None:
        super().__init__(LeastLoaded.Settings(by="tokens"))
        self.checked, self.differ, self.longest = 0, [], 0

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        for w in workers:
            walked = sum(r.prompt_tokens + r.max_output_tokens for r in w.waiting)
            if w.waiting.tokens != walked:
                self.differ.append((request.request_id, w.worker_id, w.waiting.tokens, walked))
            self.checked += 1
            self.longest = max(self.longest, len(w.waiting))
        return super().cp_route_request(ctx=ctx, request=request, workers=workers)


def test_the_queues_kept_token_totals_match_their_requests_through_an_overloaded_run_with_scaling():
    router = _TokenCheckedLeastLoaded()
    # overloaded (queues of hundreds), replicas started and drained (a drained queue is re-routed), preemptions
    res = replay_with(router, ScaleCycle(), trace=make_trace(1500, qps=60.0, seed=5),
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0,
                                           "max_num_seqs": 8}]})
    assert res.summary["num_completed"] == 1500 and res.summary["num_plugin_errors"] == 0
    assert router.differ == [] and router.checked > 1500 and router.longest > 100
    assert any(d.action == "scale" for d in res.decisions)


def test_readiness_gate_answers_from_worker_events_as_from_the_states():
    ready = [make_worker(f"default-{i}") for i in range(3)]
    starting = make_worker("default-3", state=WorkerState.STARTING)
    ctx = make_context(workers=[*ready, starting])
    gate = ReadinessGate()
    assert not gate.all_ready(ctx, [*ready, starting]) and gate.all_ready(ctx, ready)  # not fed: looks
    gate.observe(ctx, WorkerChanged(0.0, "default-0", "ready"))  # fed: seeded at the next question
    assert not gate.all_ready(ctx, [*ready, starting])
    starting.state = WorkerState.READY
    gate.observe(ctx, WorkerChanged(1.0, "default-3", "ready"))
    assert gate.all_ready(ctx, [*ready, starting])
    other = make_worker("default-4", state=WorkerState.STARTING)  # not known to the gate: it looks
    assert not gate.all_ready(ctx, [*ready, other])


def test_readiness_gate_follows_a_drain_when_it_was_seeded_with_only_ready_replicas():
    ready = [make_worker(f"default-{i}") for i in range(3)]
    ctx = make_context(workers=ready)
    gate = ReadinessGate()
    gate.observe(ctx, WorkerChanged(0.0, "default-0", "ready"))
    assert gate.all_ready(ctx, ready)  # seeded: three ready, none starting
    ready[2].state = WorkerState.DRAINING
    gate.observe(ctx, WorkerChanged(1.0, "default-2", "draining"))
    assert gate._accepting == {"default": {"default-0", "default-1"}}
    assert gate.all_ready(ctx, ready[:2])


def test_least_loaded_index_routes_as_the_scan_does_with_sync_output_checks():
    # A synchronously checked answer leaves its replica at the batch's end, but its
    # RequestFinished comes only with the verdict: the index must not miss that lighter load.
    router = _CheckedLeastLoaded()
    res = replay_with(router, trace=make_trace(400, qps=12.0, seed=5),
                      cluster={"models": [{"name": "default", "replicas": 4}]},
                      plugins={"settings": {"sampled-guardian": {"rate": 0.5, "mode": "sync"}}},
                      guardians={"models": [{"name": "guardian", "replicas": 4, "timeout_s": 30.0,
                                             "latency": {"base_s": 3.0}}]})
    assert res.summary["num_completed"] == 400
    assert sum(d.action == "guardian_check" for d in res.decisions) > 100
    assert router.differ == [] and res.summary["num_plugin_errors"] == 0
    assert router.checked > 300 and router.indexed == router.checked


def test_least_loaded_by_tokens_counts_prompt_and_output_tokens_not_requests():
    long_one = make_worker("default-0", running=make_requests(1, prompt_tokens=100_000, prefix="x"))
    three_short = make_worker("default-1", waiting=deque(make_requests(3, prompt_tokens=500, output_tokens=20)))
    ctx = make_context(workers=[long_one, three_short])
    req = make_requests(1, prefix="n")[0]
    assert LeastLoaded().cp_route_request(ctx=ctx, request=req, workers=[long_one, three_short]).worker_id == "default-0"
    d = LeastLoaded(LeastLoaded.Settings(by="tokens")).cp_route_request(ctx=ctx, request=req,
                                                                        workers=[long_one, three_short])
    assert d.worker_id == "default-1" and d.reason == "least loaded (1560 tokens in 3 queued+running)"


def test_least_loaded_by_tokens_breaks_ties_by_requests_then_cluster_order():
    a = make_worker("default-0", waiting=deque(make_requests(2, prompt_tokens=50, output_tokens=1)))  # 102 tokens
    b = make_worker("default-1", waiting=deque(make_requests(1, prompt_tokens=101, output_tokens=1, prefix="y")))
    c = make_worker("default-2", waiting=deque(make_requests(1, prompt_tokens=101, output_tokens=1, prefix="z")))
    router = LeastLoaded(LeastLoaded.Settings(by="tokens"))
    assert router.cp_route_request(ctx=make_context(workers=[a, b, c]), request=make_requests(1)[0],
                                   workers=[a, b, c]).worker_id == "default-1"
