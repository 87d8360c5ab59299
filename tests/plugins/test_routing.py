"""Routing: least loaded and round robin."""

from __future__ import annotations

from collections import deque

from controlplane.testing import make_context, make_requests, make_worker
from plugins.routing import LeastLoaded, RoundRobin


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
