"""Weighted scorer routing: scorer values, weights, the actual prefix cache, power of two, stored scores."""

from __future__ import annotations

from collections import deque

import pytest
from pydantic import ValidationError

from controlplane import hookimpl
from controlplane.events import RequestFinished
from controlplane.testing import make_context, make_plugin_set, make_worker, replay_with
from controlplane.types import Request, RequestStatus
from plugins import scorers
from plugins.prefix_cache import PrefixCache
from plugins.scorers import ReplicaStats, estimated_work, queue_depth
from plugins.weighted_routing import PowerOfTwo, PrefixOnly, WeightedRouter
from sim.traces.shared_prefix import shared_prefix_trace

from .kept_queues import overloaded_trace, replay_kept_and_walked


def _req(rid="x", prompt=64, out=8, hashes=(), tenant=None, params=()):
    return Request(rid, 0.0, prompt, out, model="default", tenant=tenant, hash_ids=tuple(hashes),
                   hash_block_tokens=16 if hashes else None, params=params)


def _ctx_with_cache(workers, cache):
    """A context whose ctx.prefix_match reads ``cache`` (as the core binds it)."""
    ctx = make_context(workers=workers)
    ctx.bind_prefix_peek(lambda c, w, r: cache.cp_prefix_peek(ctx=c, worker=w, request=r))
    return ctx


def test_queue_depth_is_min_max_normalised():
    ws = [make_worker(f"w{i}", waiting=deque(_req(f"{i}-{j}") for j in range(n))) for i, n in enumerate((0, 2, 4))]
    assert queue_depth(None, _req(), ws, ReplicaStats()) == [1.0, 0.5, 0.0]


def test_prefix_score_reads_the_replicas_actual_cache():
    a, b = make_worker("a"), make_worker("b")
    cache = PrefixCache(PrefixCache.Settings(capacity_blocks=100))
    done = _req("old", prompt=64, hashes=(1, 2, 3, 4))
    cache.cp_prefix_store(ctx=None, worker=b, request=done)
    ctx = _ctx_with_cache([a, b], cache)
    router = WeightedRouter(WeightedRouter.Settings(weights={"prefix-cache-hit": 1.0}))
    d = router.cp_route_request(ctx=ctx, request=_req("new", prompt=80, hashes=(1, 2, 3, 9, 10)), workers=[a, b])
    assert d.worker_id == "b"
    assert d.scores["b"]["prefix-cache-hit"] == pytest.approx(48 / 80)
    assert d.scores["a"]["prefix-cache-hit"] == 0.0
    assert cache.num_lookups == 0  # peeking counts no lookup


def test_weights_decide_between_prefix_and_load():
    a = make_worker("a")
    b = make_worker("b", waiting=deque(_req(f"q{i}") for i in range(5)))
    cache = PrefixCache(PrefixCache.Settings(capacity_blocks=100))
    cache.cp_prefix_store(ctx=None, worker=b, request=_req("old", hashes=(1, 2, 3, 4)))
    ctx = _ctx_with_cache([a, b], cache)
    req = _req("new", hashes=(1, 2, 3, 4))  # 64 tokens, all cached on b: prefix score 1 there
    prefix_heavy = WeightedRouter(WeightedRouter.Settings(weights={"prefix-cache-hit": 3.0, "queue-depth": 1.0}))
    load_heavy = WeightedRouter(WeightedRouter.Settings(weights={"prefix-cache-hit": 1.0, "queue-depth": 3.0}))
    assert prefix_heavy.cp_route_request(ctx=ctx, request=req, workers=[a, b]).worker_id == "b"
    assert load_heavy.cp_route_request(ctx=ctx, request=req, workers=[a, b]).worker_id == "a"


def test_bad_weights_are_refused_with_the_scorer_named():
    with pytest.raises(ValidationError, match="unknown scorer.*prefix-hit"):
        WeightedRouter.Settings(weights={"prefix-hit": 1.0})
    with pytest.raises(ValidationError, match="positive weight"):
        WeightedRouter.Settings(weights={"queue-depth": 0.0})


def test_estimated_work_does_not_take_tokens_per_busy_second_for_speed():
    """Equal queued work; replica b computed twice as many tokens per busy second (bigger batches, not a faster
    replica): both count as equally fast (the speed is `plugins.scorers.BatchTimes`'s,
    tests/plugins/test_replica_speed.py)."""
    stats = ReplicaStats()
    a = make_worker("a", waiting=deque([_req("qa", prompt=1000, out=0)]), busy_s=10.0)
    b = make_worker("b", waiting=deque([_req("qb", prompt=1000, out=0)]), busy_s=10.0)
    for wid, tokens in (("a", 1000), ("b", 2000)):
        r = _req(f"done-{wid}", prompt=tokens, out=0)
        r.worker_id, r.first_token_s, r.status = wid, 1.0, RequestStatus.COMPLETED
        stats.observe(RequestFinished(1.0, r))
    assert stats.throughput(b) == 2 * stats.throughput(a)
    assert stats.relative_speeds([a, b]) == [1.0, 1.0]
    assert estimated_work(make_context(workers=[a, b]), _req(), [a, b], stats) == [1.0, 1.0]


def test_session_affinity_follows_the_session():
    ws = [make_worker("a"), make_worker("b")]
    router = WeightedRouter(WeightedRouter.Settings(weights={"session-affinity": 1.0}))
    ctx = make_context(workers=ws)
    ws[0].waiting.append(_req("busy"))  # a is busier, but the session was on a
    router.stats.routed(_req(params=(("session_id", "s1"),)), "a")
    d = router.cp_route_request(ctx=ctx, request=_req("n", params=(("session_id", "s1"),)), workers=ws)
    assert d.worker_id == "a"
    d = router.cp_route_request(ctx=ctx, request=_req("m", params=(("session_id", "s2"),)), workers=ws)
    assert d.worker_id == "b"  # no session yet: ties broken by load


def test_power_of_two_uses_the_run_rng_and_picks_the_better_of_its_sample():
    ws = [make_worker(f"w{i}", waiting=deque(_req(f"{i}-{j}") for j in range(i))) for i in range(6)]
    picks = set()
    for seed in range(20):
        ctx = make_context(workers=ws, seed=seed)
        d = PowerOfTwo().cp_route_request(ctx=ctx, request=_req(), workers=ws)
        assert len(d.scores) == 2  # it scored its sample only
        chosen = int(d.worker_id[1:])
        assert chosen == min(int(k[1:]) for k in d.scores)  # the less loaded of the two
        picks.add(d.worker_id)
    assert len(picks) > 1
    again = [PowerOfTwo().cp_route_request(ctx=make_context(workers=ws, seed=3), request=_req(), workers=ws).worker_id
             for _ in range(2)]
    assert again[0] == again[1]  # same seed, same choice


def test_route_decisions_store_their_scores_in_a_replay():
    trace = shared_prefix_trace(num_requests=40, qps=20, num_tenants=2, system_prompt_tokens=512)
    res = replay_with(trace=trace, plugins={"enabled": ["weighted-router", "prefix-cache", "continuous-batching",
                                                        "fixed-replicas", "static-memory", "builtin-latency-models"]},
                      cluster={"models": [{"replicas": 3}]})
    routes = [d for d in res.decisions if d.hook == "cp_route_request" and d.action == "route"]
    assert len(routes) == 40 and all(d.plugin == "weighted-router" for d in routes)
    for d in routes:
        scores = d.payload["scores"]
        assert set(scores) == {"default-0", "default-1", "default-2"}
        chosen = d.payload["worker"]
        assert scores[chosen]["total"] == max(s["total"] for s in scores.values())
    assert any(s["prefix-cache-hit"] > 0 for d in routes for s in d.payload["scores"].values())


def test_prefix_only_ignores_load():
    a = make_worker("a", waiting=deque(_req(f"q{i}") for i in range(50)))
    b = make_worker("b")
    cache = PrefixCache(PrefixCache.Settings(capacity_blocks=100))
    cache.cp_prefix_store(ctx=None, worker=a, request=_req("old", hashes=(1, 2)))
    ctx = _ctx_with_cache([a, b], cache)
    assert PrefixOnly().cp_route_request(ctx=ctx, request=_req("n", prompt=32, hashes=(1, 2)),
                                         workers=[a, b]).worker_id == "a"


def test_a_tie_says_the_least_loaded_took_it():
    # prefix-only on a trace without hash_ids: every decision read "best weighted score 0.000 of 4
    # (prefix-cache-hit 0.00)", a tie the load decided
    ws = [make_worker(f"w{i}", waiting=deque(_req(f"{i}-{j}") for j in range(n))) for i, n in enumerate((2, 1, 1, 3))]
    d = PrefixOnly().cp_route_request(ctx=make_context(workers=ws), request=_req(), workers=ws)
    assert d.worker_id == "w1"
    assert d.reason == ("tie of 4 at 0.000 of 4 (prefix-cache-hit 0.00): least loaded (1 queued+running, first of 2 "
                        "in cluster order)")
    d = WeightedRouter(WeightedRouter.Settings(weights={"queue-depth": 1.0})).cp_route_request(
        ctx=make_context(workers=ws), request=_req(), workers=ws)
    assert d.worker_id == "w1" and d.reason == ("tie of 2 at 1.000 of 4 (queue-depth 1.00): least loaded "
                                                "(1 queued+running, first of 2 in cluster order)")
    ws[2].waiting.append(_req("more"))
    d = WeightedRouter(WeightedRouter.Settings(weights={"queue-depth": 1.0})).cp_route_request(
        ctx=make_context(workers=ws), request=_req(), workers=ws)
    assert d.worker_id == "w1" and d.reason == "best weighted score 1.000 of 4 (queue-depth 1.00)"


def test_the_plugins_are_registered():
    ps = make_plugin_set(enabled=["weighted-router", "power-of-two", "prefix-only"])
    assert {p.info.name for p in ps.loaded} >= {"weighted-router", "power-of-two", "prefix-only"}


class _WorkCheckedRouter(WeightedRouter):
    """Routes by estimated work, each candidate's kept queue work checked against a walk of its queue."""

    name = "work-checked-router"

    def __init__(self, settings=None) -> None:
        super().__init__(WeightedRouter.Settings(weights={"estimated-work": 1.0, "prefix-cache-hit": 0.5}))
        self.checked, self.differ, self.longest = 0, [], 0

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        for w in workers:
            kept = w.waiting.remaining_prefill_tokens + w.waiting.remaining_output_tokens
            walked = sum(r.remaining_prefill_tokens + r.max_output_tokens - r.output_tokens for r in w.waiting)
            if kept != walked:
                self.differ.append((request.request_id, w.worker_id, kept, walked))
            self.checked += 1
            self.longest = max(self.longest, len(w.waiting))
        return super().cp_route_request(ctx=ctx, request=request, workers=workers)


def test_estimated_work_reads_the_kept_queue_work_and_routes_as_the_walk_does(monkeypatch):
    # overloaded (queues of hundreds), prefix hits, preemptions, replicas started and drained
    enabled = ["prefix-cache", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    kept, _, router = replay_kept_and_walked(monkeypatch, scorers, _WorkCheckedRouter,
                                             overloaded_trace(prompt_tokens=48), enabled, num_kv_blocks=100)
    assert kept.summary["num_completed"] == 1500 and router.checked > 1500
    assert sum(r.cached_tokens > 0 for r in kept.requests) > 500
    assert sum(d.plugin == "work-checked-router" for d in kept.decisions) >= 1500  # (and re-routes from drains)


def test_weighing_prefix_hits_alone_without_a_prefix_cache_routes_as_least_loaded():
    # what the warning below says: every total ties at 0, and the tie goes to the least loaded, then cluster order
    workers = [make_worker(f"w{i}", waiting=deque(_req(f"q{i}-{j}") for j in range(n)))
               for i, n in enumerate((2, 1, 1))]
    router = WeightedRouter(WeightedRouter.Settings(weights={"prefix-cache-hit": 1.0}))
    d = router.cp_route_request(ctx=make_context(workers=workers), request=_req(hashes=(1, 2)), workers=workers)
    assert d.worker_id == "w1" and "least loaded (1 queued+running, first of 2 in cluster order)" in d.reason


@pytest.mark.parametrize("router,settings,says", [
    (PrefixOnly, {}, "prefix-only weighs prefix-cache-hit (1) but no enabled plugin keeps a prefix cache"),
    (WeightedRouter, {}, "so the other scorers alone decide"),
    # weighing prefix-cache-hit alone there are no other scorers: it said "the other scorers alone decide"
    (WeightedRouter, {"weights": {"prefix-cache-hit": 1.0}}, "scores 0 on it, so it routes as least-loaded;"),
    (PowerOfTwo, {"weights": {"prefix-cache-hit": 1.0}}, "so it routes to the least loaded of the replicas it samples"),
    (PrefixOnly, {"weights": {"prefix-cache-hit": 1.0, "queue-depth": 1.0}}, "so the other scorers alone decide"),
])
def test_a_router_weighing_prefix_hits_warns_without_a_prefix_cache(caplog, router, settings, says):
    # prefix-only without prefix-cache routed as least-loaded, and said nothing
    import logging

    from controlplane.testing import make_config

    base = ["queue-limit", router.name, "continuous-batching", "fixed-replicas", "static-memory",
            "builtin-latency-models"]
    with caplog.at_level(logging.WARNING, logger="plugins.weighted_routing"):
        router(router.Settings(**settings)).cp_run_started(ctx=make_context(config=make_config(
            plugins={"enabled": base})))
    assert says in caplog.text and "add prefix-cache to plugins.enabled" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="plugins.weighted_routing"):
        router(router.Settings(**settings)).cp_run_started(ctx=make_context(config=make_config(
            plugins={"enabled": [*base, "prefix-cache"]})))
        PowerOfTwo().cp_run_started(ctx=make_context(config=make_config(plugins={"enabled": base})))  # no prefix weight
    assert caplog.text == ""
