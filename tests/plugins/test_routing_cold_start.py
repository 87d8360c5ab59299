"""Routers weigh a starting replica's remaining cold start as waiting (plugins.routing_wait)."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest

from controlplane.events import RequestFinished
from controlplane.testing import ScaleTo, make_config, make_context, make_trace, make_worker, replay_with
from controlplane.types import Request, RequestStatus, WorkerState
from plugins.prefix_cache import PrefixAffinity
from plugins.routing import LeastLoaded
from plugins.routing_wait import ReadinessGate
from plugins.weighted_routing import PowerOfTwo, PrefixOnly, WeightedRouter

COLD_START_S = 30.0


def _req(rid, prompt=1000, out=0, hashes=()):
    return Request(rid, 0.0, prompt, out, model="default", hash_ids=tuple(hashes),
                   hash_block_tokens=16 if hashes else None)


def _cluster(queued_on_ready: int, now_s: float = 10.0):
    """A ready replica with ``queued_on_ready`` 1000-token prompts waiting, and an idle one started at 0."""
    ready = make_worker("default-0", waiting=deque(_req(f"q{i}") for i in range(queued_on_ready)), busy_s=1.0)
    starting = make_worker("default-1", state=WorkerState.STARTING, started_s=0.0)
    config = make_config(cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": COLD_START_S}]})
    return make_context(now_s=now_s, workers=[ready, starting], config=config), [ready, starting]


def _measured(router, tokens=1000):
    """The ready replica finished a request: ``tokens`` tokens in its 1 busy second."""
    done = _req("done", prompt=tokens)
    done.worker_id, done.first_token_s, done.status = "default-0", 1.0, RequestStatus.COMPLETED
    router.cp_on_event(ctx=None, event=RequestFinished(1.0, done))
    return router


def _route(router, ctx, workers, request=None):
    return router.cp_route_request(ctx=ctx, request=request or _req("new", out=8), workers=workers).worker_id


def test_least_loaded_prefers_a_ready_replica_that_drains_before_the_cold_start_ends():
    # 3 queued prompts at 1000 tokens/s: 3 s of work, against 20 s left of the cold start. By
    # request count the starting replica (0 queued) was the least loaded.
    ctx, workers = _cluster(3)
    d = _measured(LeastLoaded()).cp_route_request(ctx=ctx, request=_req("new"), workers=workers)
    assert d.worker_id == "default-0"
    assert d.reason == ("least loaded (3 queued+running); 1 starting replica left out (expected wait above a ready "
                        "replica's)")


def test_least_loaded_sends_to_the_starting_replica_when_every_ready_one_is_more_backed_up():
    ctx, workers = _cluster(25)  # 25 s of queued work > 20 s until the starting replica is ready
    d = _measured(LeastLoaded()).cp_route_request(ctx=ctx, request=_req("new"), workers=workers)
    assert d.worker_id == "default-1"
    assert d.reason == "starting replica: expected wait 20.0 s (ready in 20.0 s), below every ready replica's"
    # later in the cold start (5 s left) a shorter queue already loses to it
    ctx, workers = _cluster(8, now_s=25.0)
    assert _route(_measured(LeastLoaded()), ctx, workers) == "default-1"


def test_a_starting_replicas_own_queue_adds_to_its_wait():
    ctx, workers = _cluster(25)
    workers[1].waiting.extend(_req(f"s{i}") for i in range(6))  # 20 s + 6 s > 25 s
    assert _route(_measured(LeastLoaded()), ctx, workers) == "default-0"


def test_without_a_measured_speed_ready_replicas_win():
    ctx, workers = _cluster(25)
    assert _route(LeastLoaded(), ctx, workers) == "default-0"


def test_only_starting_replicas_route_by_expected_wait():
    config = make_config(cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": COLD_START_S}]})
    early = make_worker("default-0", state=WorkerState.STARTING, started_s=0.0)
    late = make_worker("default-1", state=WorkerState.STARTING, started_s=8.0)
    ctx = make_context(now_s=10.0, workers=[late, early], config=config)
    d = LeastLoaded().cp_route_request(ctx=ctx, request=_req("new"), workers=[late, early])
    assert d.worker_id == "default-0"  # ready in 20 s, not 28 s
    assert d.reason == "starting replica: expected wait 20.0 s (ready in 20.0 s), no replica ready"


def test_time_to_ready_comes_from_the_deployments_cold_start():
    ctx, (ready, starting) = _cluster(0, now_s=12.5)
    gate = ReadinessGate()
    assert gate.time_to_ready_s(ctx, starting) == pytest.approx(17.5)
    assert gate.time_to_ready_s(ctx, ready) == 0.0
    ctx, (_, starting) = _cluster(0, now_s=45.0)
    assert gate.time_to_ready_s(ctx, starting) == 0.0  # late: not known to be later still


@pytest.mark.parametrize("router_cls", [WeightedRouter, PowerOfTwo, PrefixOnly])
def test_weighted_routers_skip_a_starting_replica_while_a_ready_one_is_less_backed_up(router_cls):
    ctx, workers = _cluster(3)
    assert _route(_measured(router_cls()), ctx, workers) == "default-0"
    ctx, workers = _cluster(25)
    assert _route(_measured(router_cls()), ctx, workers) == "default-1"


def test_prefix_affinity_skips_a_starting_replica_while_a_ready_one_is_less_backed_up():
    ctx, workers = _cluster(1)
    router = _measured(PrefixAffinity())
    router.cp_route_request(ctx=make_context(workers=workers[1:]), request=_req("a", hashes=(1, 2)),
                            workers=workers[1:])  # its blocks were last sent to the starting replica
    assert _route(router, ctx, workers, _req("b", hashes=(1, 2, 3))) == "default-0"


def test_in_a_replay_no_request_waits_out_a_cold_start_while_the_ready_replica_keeps_up():
    # The default router (least-loaded). One ready replica keeps up with 4 req/s; a second one is
    # started at the first tick with a 20 s cold start. Counting requests, the starting replica
    # (0 queued) looked least loaded whenever the ready one held a request.
    res = replay_with(ScaleTo(2), trace=make_trace(80, qps=4.0, seed=2),
                      cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 20.0}]})
    assert res.summary["num_completed"] == 80
    assert {r.worker_id for r in res.requests} == {"default-0"}
    assert max(r.first_token_s - r.arrival_s for r in res.requests) < 5.0
    starts = [d for d in res.decisions if d.action == "scale"]
    assert starts and starts[0].time_s < 5.0  # default-1 was starting while most requests arrived


@pytest.mark.parametrize("router", [{"least-loaded": {}}, {"least-loaded": {"by": "tokens"}}, {"weighted-router": {}}])
def test_the_simulators_warm_initial_replicas_are_not_waited_for(router):
    # Requests arriving together as the run starts are routed before the initial replicas' readiness is handled
    # (at the same instant): no 30 s cold start is expected of them, and they are spread as across ready replicas.
    trace = [replace(t, arrival_s=0.0) for t in make_trace(4, seed=1)]
    name, settings = next(iter(router.items()))
    res = replay_with(trace=trace, plugins={"enabled": ["builtin-latency-models", "continuous-batching", name], "settings": {name: settings}},
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": COLD_START_S}]})
    routes = [d for d in res.decisions if d.action == "route"]
    assert len(routes) == 4 and {d.plugin for d in routes} == {name}
    assert not any("starting replica" in d.reason for d in routes)
    assert {d.payload["worker"] for d in routes} == {"default-0", "default-1"}
    assert res.summary["num_completed"] == 4


def test_a_replica_its_driver_makes_ready_now_counts_as_ready():
    ctx, workers = _cluster(3)
    workers[1].ready_by_s = ctx.now_s
    gate = ReadinessGate()
    assert gate.all_ready(ctx, workers) and gate.time_to_ready_s(ctx, workers[1]) == 0.0
    workers[1].ready_by_s = ctx.now_s + 4.0  # told later than its deployment's cold start says (20 s left)
    assert not gate.all_ready(ctx, workers) and gate.time_to_ready_s(ctx, workers[1]) == 4.0


def test_a_weighted_routers_reason_says_which_starting_replicas_it_left_out_and_whether_the_pick_is_one():
    # it said "best weighted score 2.000 of 1" with 3 starting replicas left out unsaid
    ctx, workers = _cluster(3)
    d = _measured(WeightedRouter()).cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers)
    assert d.worker_id == "default-0"
    assert d.reason == ("best weighted score 2.000 of 1 (prefix-cache-hit 0.00, queue-depth 1.00, kv-utilization "
                        "1.00); 1 starting replica left out (expected wait above a ready replica's)")
    ctx, workers = _cluster(25)
    d = _measured(WeightedRouter()).cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers)
    assert d.worker_id == "default-1"
    assert d.reason.endswith("; a starting replica: ready in 20.0 s, expected wait 20.0 s, below every ready "
                             "replica's")


@pytest.mark.parametrize("router", [LeastLoaded, WeightedRouter])
def test_a_starting_replica_left_out_before_any_speed_is_known_says_so(router):
    # Before any request of the model finished no speed is known and a ready replica's queue counts as no wait:
    # the reason said "expected wait above a ready replica's", a comparison of waits that was not made
    ctx, workers = _cluster(3)
    d = router().cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers)
    assert d.worker_id == "default-0"
    assert d.reason.endswith("; 1 starting replica left out (no speed known yet: ready replicas win)")
    d = _measured(router()).cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers)
    assert d.reason.endswith("; 1 starting replica left out (expected wait above a ready replica's)")


def _one_ready_three_starting():
    config = make_config(cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": COLD_START_S}]})
    workers = [make_worker("default-0", busy_s=1.0, waiting=deque([_req("q0")]))]
    workers += [make_worker(f"default-{i}", state=WorkerState.STARTING, started_s=0.0) for i in (1, 2, 3)]
    return config, workers


def test_power_of_two_samples_among_the_replicas_readiness_leaves():
    # One ready replica, three starting (20 s of cold start left): two starting replicas sampled together sent the
    # request to wait out a cold start (133 of 239 requests at a cold start, TTFT 18 s against 2.9 s)
    config, workers = _one_ready_three_starting()
    for seed in range(20):
        ctx = make_context(now_s=10.0, workers=workers, config=config, seed=seed)
        d = _measured(PowerOfTwo()).cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers)
        assert d.worker_id == "default-0"
        assert d.reason.endswith("; 3 starting replicas left out (expected wait above a ready replica's)")
    ctx = make_context(now_s=10.0, workers=workers[1:], config=config, seed=1)  # none ready: a starting one, said
    d = _measured(PowerOfTwo()).cp_route_request(ctx=ctx, request=_req("new", out=8), workers=workers[1:])
    assert "of 2 sampled from 3" in d.reason and d.reason.endswith(
        "; a starting replica: ready in 20.0 s, expected wait 20.0 s, no replica ready")
