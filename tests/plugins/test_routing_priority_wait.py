"""Under a batcher that serves by priority, a request's expected wait counts only the queued work at its priority
or above, and the running work (plugins.routing_wait.work_ahead, PolicyContext.serves_by_priority)."""

from __future__ import annotations

from collections import deque

import pytest

from controlplane.context import Clock
from controlplane.events import RequestFinished
from controlplane.policy_calls import PolicyCalls
from controlplane.testing import make_config, make_context, make_plugin_set, make_worker
from controlplane.types import Request, RequestStatus, WorkerState
from controlplane.waiting_queue import WaitingQueue
from plugins.batching import ContinuousBatching, PriorityContinuousBatching
from plugins.routing import LeastLoaded
from plugins.routing_wait import work_ahead
from plugins.weighted_routing import WeightedRouter

COLD_START_S = 30.0


def _req(rid, prompt=1000, priority=0):
    return Request(rid, 0.0, prompt, 0, model="default", priority=priority)


def _cluster(by_priority: bool):
    """A ready replica with 25 s of batch work queued (priority -1) and an idle one 20 s from ready."""
    ready = make_worker("default-0", waiting=deque(_req(f"q{i}", priority=-1) for i in range(25)), busy_s=1.0)
    starting = make_worker("default-1", state=WorkerState.STARTING, started_s=0.0)
    config = make_config(cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": COLD_START_S}]})
    ctx = make_context(now_s=10.0, workers=[ready, starting], config=config)
    ctx.serves_by_priority = by_priority
    return ctx, [ready, starting]


def _measured(router):
    done = _req("done")  # 1000 tokens in the ready replica's 1 busy second
    done.worker_id, done.first_token_s, done.status = "default-0", 1.0, RequestStatus.COMPLETED
    router.cp_on_event(ctx=None, event=RequestFinished(1.0, done))
    return router


@pytest.mark.parametrize("router_cls", [LeastLoaded, WeightedRouter])
def test_a_priority_request_does_not_wait_out_a_cold_start_behind_work_it_overtakes(router_cls):
    ctx, workers = _cluster(by_priority=True)
    d = _measured(router_cls()).cp_route_request(ctx=ctx, request=_req("vip", priority=5), workers=workers)
    assert d.worker_id == "default-0"
    # a request of the queued class waits for it all: the starting replica is sooner
    ctx, workers = _cluster(by_priority=True)
    d = _measured(router_cls()).cp_route_request(ctx=ctx, request=_req("bulk", priority=-1), workers=workers)
    assert d.worker_id == "default-1"


def test_a_first_come_first_served_batcher_counts_every_queued_request():
    ctx, workers = _cluster(by_priority=False)
    d = _measured(LeastLoaded()).cp_route_request(ctx=ctx, request=_req("vip", priority=5), workers=workers)
    assert d.worker_id == "default-1"
    assert d.reason == "starting replica: expected wait 20.0 s (ready in 20.0 s), below every ready replica's"


@pytest.mark.parametrize("queue", [deque, WaitingQueue])
def test_work_ahead_counts_running_work_and_queued_work_at_the_priority_or_above(queue):
    running = _req("r", prompt=300, priority=-5)
    running.status = RequestStatus.RUNNING  # joined with its prefill batch, which runs now: all of it work ahead
    w = make_worker("default-0", waiting=queue([_req("lo", 100, -1), _req("hi", 10, 5), _req("eq", 1, 2)]),
                    running=[running])
    assert work_ahead(w, 2) == 300 + 10 + 1
    assert work_ahead(w, 6) == 300  # above every queued one
    assert work_ahead(w, -1) == 300 + 100 + 10 + 1  # below none


def _flag(*plugins, enabled):
    plugin_set = make_plugin_set(*plugins, enabled=enabled)
    ctx = make_context()
    PolicyCalls(plugin_set, {"cp_form_batch": ContinuousBatching()}, ctx, Clock())
    return ctx.serves_by_priority


def test_the_core_says_whether_the_batcher_serves_by_priority():
    assert _flag(enabled=["least-loaded", "priority-continuous-batching"]) is True
    # a plugin that only rejects from the queue (priority-classes' queue timeouts) is not the batcher
    assert _flag(enabled=["priority-classes", "least-loaded", "priority-continuous-batching"]) is True
    assert _flag(enabled=["least-loaded", "continuous-batching"]) is False
    assert _flag(enabled=["least-loaded"]) is False  # the built-in fallback: first come, first served
    # a plugin passed in code, asked first, is the batcher
    assert _flag(PriorityContinuousBatching(), enabled=["least-loaded", "continuous-batching"]) is True
