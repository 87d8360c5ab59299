"""`sim.exact` (one core round trip per iteration) checks the fast multi-iteration mode.

Both modes must give every request the same outcome and the same finish time (to 1e-9
relative): the fast mode only skips core round trips where nothing can change.
"""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import BatchPlan, CacheHit, RouteDecision
from controlplane.events import MetricSample
from controlplane.testing import make_trace, replay_with
from sim.traces import TraceRequest
from tests.fixtures.common import azure_head, finish_time_mismatches

ONE_REPLICA_TIGHT_KV = {"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 400}]}


def _both(trace, *plugins, **overrides):
    fast = replay_with(*plugins, trace=trace, **overrides)
    exact = replay_with(*plugins, trace=trace, sim={"exact": True}, **overrides)
    return fast, exact


def _batches(res):
    return [d for d in res.decisions if d.action == "batch"]


def _assert_agree(fast, exact):
    assert finish_time_mismatches(fast.requests, exact.requests) == []
    assert len(fast.requests) == len(exact.requests) == fast.summary["num_requests"]
    for key in ("num_completed", "num_rejected", "num_preemptions"):
        assert fast.summary[key] == exact.summary[key], key
    # The point of the fast mode: far fewer core round trips for the same result.
    assert len(_batches(exact)) > len(_batches(fast))
    assert all(d.payload["iterations"] == 1 for d in _batches(exact))


def test_exact_and_fast_agree_on_a_synthetic_trace():
    fast, exact = _both(make_trace(300, qps=8, output_tokens=96, seed=4))
    _assert_agree(fast, exact)
    assert fast.summary["num_completed"] == 300


def test_exact_and_fast_agree_on_the_first_1500_azure_rows():
    fast, exact = _both(azure_head(1500))
    _assert_agree(fast, exact)
    assert fast.summary["num_completed"] == 1500


def test_exact_and_fast_agree_with_preemptions_on_a_synthetic_trace():
    fast, exact = _both(make_trace(300, qps=8, output_tokens=128, seed=0), cluster=ONE_REPLICA_TIGHT_KV)
    assert fast.summary["num_preemptions"] > 0
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_with_a_kv_budget_on_the_first_1500_azure_rows():
    fast, exact = _both(azure_head(1500), cluster=ONE_REPLICA_TIGHT_KV)
    assert sum(d.action == "preempt" for d in fast.decisions) > 0
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_with_sarathi_chunked_prefill():
    fast, exact = _both(
        make_trace(200, qps=6, output_tokens=128, seed=1),
        cluster={"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 150}]},
        plugins={"settings": {"continuous-batching": {"policy": "sarathi", "chunk_size": 256}}},
    )
    assert fast.summary["num_preemptions"] > 0
    _assert_agree(fast, exact)


class LoadOnlyRouter(Plugin):
    """Least loaded by queued + running requests only (no KV tie-break)."""

    name = "load-only"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        best = min(workers, key=lambda w: w.load)
        return RouteDecision(best.worker_id, "fewest requests")


TWO_REPLICAS_TIGHT_KV = {"models": [{"name": "default", "replicas": 2, "num_kv_blocks": 150}]}


def test_exact_and_fast_agree_with_two_replicas_when_routing_reads_only_load():
    fast, exact = _both(make_trace(200, qps=6, output_tokens=128), LoadOnlyRouter(), cluster=TWO_REPLICAS_TIGHT_KV)
    assert fast.summary["num_preemptions"] > 0
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_with_two_replicas_and_a_kv_budget():
    fast, exact = _both(make_trace(200, qps=6, output_tokens=128), cluster=TWO_REPLICAS_TIGHT_KV)
    _assert_agree(fast, exact)


def _shared_prefix_trace(n: int, seed: int = 3):
    """Conversations that share prompt prefixes (Mooncake-style ``hash_ids``, 16-token blocks)."""
    import numpy as np

    from sim.traces import TraceRequest

    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for i in range(n):
        t += float(rng.exponential(1 / 6))
        system = int(rng.integers(0, 4))  # four shared system prompts of 8 blocks
        own = int(rng.integers(1, 6))
        blocks = tuple(range(system * 100, system * 100 + 8)) + tuple(1000 + i * 10 + j for j in range(own))
        out.append(TraceRequest(str(i), t, len(blocks) * 16, int(rng.integers(4, 80)), hash_ids=blocks,
                                hash_block_tokens=16))
    return out


def test_exact_and_fast_agree_with_prefix_caching_and_affinity_routing():
    fast, exact = _both(
        _shared_prefix_trace(300),
        cluster={"models": [{"name": "default", "replicas": 3}]},
        plugins={"enabled": ["prefix-affinity", "prefix-cache", "continuous-batching", "fixed-replicas",
                             "static-memory", "builtin-latency-models"]},
    )
    assert fast.summary["prefix_hits"] > 100
    assert fast.summary["prefix_hits"] == exact.summary["prefix_hits"]
    assert [d.payload for d in fast.decisions if d.action == "route"] == \
        [d.payload for d in exact.decisions if d.action == "route"]
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_with_least_loaded_by_tokens():
    # Routing by assigned tokens reads no progress (decode steps, busy time), which the fast mode
    # settles only at a run's end: both modes route alike. (The `estimated-work` scorer reads progress, as of
    # now: `test_exact_and_fast_agree_when_routing_by_estimated_work`.)
    plugins = {"settings": {"least-loaded": {"by": "tokens"}}}
    fast, exact = _both(make_trace(300, qps=10, output_tokens=96, seed=5), cluster=TWO_REPLICAS_TIGHT_KV,
                        plugins=plugins)
    _assert_agree(fast, exact)
    routes = [d for d in fast.decisions if d.action == "route"]
    by_load = [d for d in routes if not d.reason.startswith("starting replica")]  # once a replica is ready
    assert by_load and all("tokens in" in d.reason for d in by_load)
    assert {d.payload["worker"] for d in by_load} == {"default-0", "default-1"}


def test_exact_and_fast_agree_when_routing_by_estimated_work():
    # `estimated-work` scores each replica by its remaining prefill + expected output tokens: it read the running
    # requests' progress as the core last applied it, which in the fast mode is the running batch's start (a decode
    # batch of many iterations applies its tokens at its end), so the two modes scored and routed differently
    # (`examples/work_routing_replay.yaml`, the first 100 requests: request 58 at 38.69 s went to default-2 fast,
    # default-0 exact; E2E p50 0.501 s against 0.496 s). It reads the work left as of now (`ctx.batch_progress`).
    from pathlib import Path

    from controlplane.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "work_routing_replay.yaml")
    scores = {"plugins": {"settings": {"weighted-router": {"record_scores": True}}}}
    fast = replay_with(trace=azure_head(100), config=config, **scores)
    exact = replay_with(trace=azure_head(100), config=config, sim={"exact": True}, **scores)
    assert fast.summary["peak_replicas"] > 1  # it chooses between replicas
    routes = _routes(fast)
    assert len({r["worker"] for r in routes}) > 1 and all(r["scores"] for r in routes)
    assert routes == _routes(exact)
    assert {k: v for k, v in fast.summary.items() if k != "wall_s"} == \
        {k: v for k, v in exact.summary.items() if k != "wall_s"}
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_when_routing_reads_kv_use():
    # `kv-utilization` reads the KV blocks a replica holds while its batch runs: in the fast mode a decode batch
    # of many iterations counts the iterations finished by then (`ctx.kv_blocks_used`), as the exact mode's
    # one-iteration batches do. (It read the batch's start count: on Mooncake's conversations, 0.389 SLO
    # attainment fast against 0.324 exact.)
    plugins = {"enabled": ["weighted-router", "continuous-batching", "fixed-replicas", "static-memory",
                           "builtin-latency-models"],
               "settings": {"weighted-router": {"weights": {"kv-utilization": 1.0}}}}
    cluster = {"models": [{"name": "default", "replicas": 3, "num_kv_blocks": 400}]}
    fast, exact = _both(make_trace(300, qps=12, output_tokens=160, seed=2), cluster=cluster, plugins=plugins)
    _assert_agree(fast, exact)
    assert [d.payload for d in fast.decisions if d.action == "route"] == \
        [d.payload for d in exact.decisions if d.action == "route"]


def _hpa(metric: str, target: float) -> dict:
    return {"enabled": ["hpa", "least-loaded", "continuous-batching", "static-memory", "builtin-latency-models"],
            "settings": {"hpa": {"metric": metric, "target": target, "max_replicas": 4,
                                 "metric_window_s": 0, "scale_down_stabilization_s": 20}}}


def _scales(res):
    return [(d.time_s, d.payload["to"]) for d in res.decisions if d.action == "scale"]


def test_exact_and_fast_agree_when_an_autoscaler_reads_kv_use():
    # hpa on kv_utilization (and the seed autoscaler's score) read the model's KV use at each tick: in the fast mode
    # a decode batch of many iterations counts the iterations finished by then (`ScalingContext.kv_utilization_now`),
    # as the exact mode does; it read the batch start's count, so the two modes scaled at other ticks
    cluster = {"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 200}]}
    trace = make_trace(300, qps=2, output_tokens=200, seed=3)
    fast, exact = _both(trace, cluster=cluster, plugins=_hpa("kv_utilization", 0.5))
    scales = _scales(fast)
    assert len(scales) >= 4  # it scales up and down on KV use (fast read the batch starts': 7 scales, exact 6)
    assert scales == _scales(exact)

    def kv(res):
        return [(e.time_s, e.value) for e in res.events if isinstance(e, MetricSample) and e.name == "kv_utilization"]

    assert kv(fast) and kv(fast) == kv(exact)
    _assert_agree(fast, exact)


@pytest.mark.parametrize(("metric", "target", "blocks"), [("load", 3, 200), ("load", 3, 100_000), ("running", 2, 200)])
def test_exact_and_fast_agree_when_replicas_start_beside_a_replica_that_preempts(metric, target, blocks):
    # While replicas start, `least-loaded` (its `ReadinessGate`) weighs a starting replica's cold start against a
    # ready one's queued work over its speed: the work its running requests have left and its busy seconds. In the
    # fast mode a decode batch of many iterations applies its tokens and busy time at its end; the gate read them as
    # of the batch's start, so it sent a request to a starting replica where the exact mode kept it (request 81 at
    # 43.5 s), and 12 requests finished a few ms apart. It reads them as of now (`PolicyContext.batch_progress`).
    cluster = {"models": [{"name": "default", "replicas": 1, "num_kv_blocks": blocks}]}
    trace = make_trace(300, qps=2, output_tokens=200, seed=3)
    fast, exact = _both(trace, cluster=cluster, plugins=_hpa(metric, target))
    assert len(_scales(fast)) >= 4 and _scales(fast) == _scales(exact)
    assert (fast.summary["num_preemptions"] > 0) == (blocks == 200)
    assert [d.payload for d in fast.decisions if d.action == "route"] == \
        [d.payload for d in exact.decisions if d.action == "route"]
    _assert_agree(fast, exact)


def _reasons(res):
    return {r.request_id: r.reason for r in res.requests if r.reason}


def _routes(res):
    return [d.payload for d in res.decisions if d.action == "route"]


TWO_REPLICAS_KV = {"models": [{"name": "default", "replicas": 2, "num_kv_blocks": 1500}]}


def test_exact_and_fast_agree_when_admission_predicts_finish_times():
    # queue-limit's max_finish_s times iterations between looks at each replica (`plugins.finish_time`): it read the
    # running requests' tokens as of their batch's start and looked as batches started (every iteration in the exact
    # mode, every many in the fast mode), so the two modes measured other times and refused other requests (on the
    # bundled trace at x2 on two replicas: 1,347 fast against 1,097 exact). It looks as requests arrive and finish
    # and reads their progress as of now (`ctx.request_progress`, `ctx.kv_blocks_used`).
    plugins = {"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                           "builtin-latency-models"],
               "settings": {"queue-limit": {"max_finish_s": 6}}}
    fast, exact = _both(make_trace(400, qps=14, output_tokens=120, seed=7), cluster=TWO_REPLICAS_KV, plugins=plugins)
    assert 0 < fast.summary["num_rejected"] < 300
    assert _reasons(fast) == _reasons(exact)
    assert _routes(fast) == _routes(exact)
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_when_admission_predicts_ttft_from_observed_rates():
    # slo-admission samples a prefill rate from each running request's first token and counts the prefill still
    # ahead and the free KV blocks: read as of the batch's start, the fast mode missed first tokens its prefill
    # batch (going on decoding) had made (on the bundled trace at x2, 126 statuses differed, the predicted TTFT
    # from 98 s on: 2.013 s against 2.012 s). Read as of now (`ctx.request_progress`, `ctx.kv_blocks_used`).
    plugins = {"enabled": ["slo-admission", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                           "builtin-latency-models"],
               "settings": {"slo-admission": {"ttft_s": 0.3, "min_samples": 5}}}
    fast, exact = _both(make_trace(400, qps=20, output_tokens=200, seed=7), cluster=TWO_REPLICAS_KV, plugins=plugins)
    assert 0 < fast.summary["num_rejected"] < 300  # (the fast mode refused 95, the exact mode 90)
    assert _reasons(fast) == _reasons(exact)
    _assert_agree(fast, exact)


def test_exact_and_fast_agree_when_routing_reads_the_prefix_caches():
    # prefix-only scores each replica by the prompt its prefix cache holds now (`cp_prefix_peek`), bounded by its free
    # KV blocks: it read them as of the running batch's start, and a prefill batch going on decoding stores its
    # prompts' blocks at its end where the exact mode stored them after its first iteration, so the two modes scored
    # and routed requests differently (shared-prefix trace, 3,000 KV blocks: 4 routed elsewhere, 358 scores). The
    # cache reads KV use as of now (`ctx.kv_blocks_used`) and a peek sees the prompts completed by now stored
    # (`ctx.prefilled_now`).
    from sim.traces.shared_prefix import shared_prefix_trace

    trace = shared_prefix_trace(num_requests=300, qps=20, num_tenants=4, system_prompt_tokens=1024, seed=1)
    plugins = {"enabled": ["prefix-only", "prefix-cache", "continuous-batching", "fixed-replicas", "static-memory",
                           "builtin-latency-models"]}
    cluster = {"models": [{"name": "default", "replicas": 3, "num_kv_blocks": 1000}]}
    fast, exact = _both(trace, cluster=cluster, plugins=plugins)
    assert fast.summary["prefix_hits"] > 100 and fast.summary["num_preemptions"] > 0
    assert fast.summary["prefix_hits"] == exact.summary["prefix_hits"]
    assert _routes(fast) == _routes(exact)
    _assert_agree(fast, exact)


class HitOne(Plugin):
    """Serves request ``hit`` from a response cache (the run's only hit)."""

    name = "hit-one"

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        return CacheHit("exact", reason="test") if request.request_id == "hit" else None


def _saved(res):
    return res.summary["cache_gpu_seconds_saved"], res.summary["cache_gpu_seconds_saved_upper"]


def test_exact_and_fast_agree_on_what_response_cache_hits_saved():
    # The estimate fits each batch's busy time to its iterations and tokens (`controlplane.batch_costs`): a fast-mode
    # batch of k iterations was one observation of its totals, the exact mode's k observations, so the two fitted
    # other costs (the bundled trace, trace-hit-model at rate 0.3 on two replicas: 136.94 / 370.16 GPU-seconds fast,
    # 139.90 / 351.55 exact). Each iteration is an observation of its own.
    plugins = {"enabled": ["trace-hit-model", "least-loaded", "continuous-batching", "fixed-replicas",
                           "static-memory", "builtin-latency-models"],
               "settings": {"trace-hit-model": {"mode": "rate", "hit_rate": 0.3}}}
    fast, exact = _both(make_trace(300, qps=10, output_tokens=96, seed=5), cluster=TWO_REPLICAS_TIGHT_KV,
                        plugins=plugins)
    assert fast.summary["cache_hits"] > 50
    assert _saved(fast) == _saved(exact) and 0 < _saved(fast)[0] < _saved(fast)[1]
    _assert_agree(fast, exact)


def test_the_batches_running_as_the_first_cache_hit_comes_count_its_iterations_after_it_alike():
    # The fit begins at the run's first response-cache hit: a fast-mode batch running then counted the iterations it
    # had finished before (with each iteration an observation: 0.0165 GPU-seconds saved against 0.0081 exact); they
    # are left out (`BatchCosts.exclude`).
    trace = [TraceRequest(str(i), 0.1 * i, 200, 400) for i in range(4)] + [TraceRequest("hit", 1.0, 100, 50)]
    fast, exact = _both(trace, HitOne(), cluster={"models": [{"name": "default", "replicas": 1}]})
    assert [r.request_id for r in fast.requests if r.cache_hit] == ["hit"]
    assert _saved(fast) == _saved(exact) and _saved(fast)[1] > 0
    _assert_agree(fast, exact)


# -- a batcher asked before the built-in: asked at every iteration in both modes ------------------------------

_LINEAR_SMALL_KV = {"models": [{"name": "default", "replicas": 1, "latency_model": "linear", "kv_block_size": 4,
                                "num_kv_blocks": 10, "latency": {"base_s": 0.01, "prefill_s_per_token": 0,
                                                                 "decode_s_per_seq": 0,
                                                                 "decode_s_per_context_token": 0}}]}


def test_a_batcher_that_defers_to_the_built_in_is_asked_at_every_iteration_in_the_fast_mode_too():
    """`EvictOnce` defers to `continuous-batching` until two requests decode, then evicts the newest once: the fast
    mode ran the built-in's batch of many iterations, never asked it inside them, and it evicted nobody (exact: one)."""
    from tests.controlplane.test_batch_scheduling import EvictOnce

    trace = [TraceRequest("A", 0.0, 8, 10), TraceRequest("B", 0.0, 8, 10)]
    fast = replay_with(EvictOnce(), trace=trace, cluster=_LINEAR_SMALL_KV)
    exact = replay_with(EvictOnce(), trace=trace, cluster=_LINEAR_SMALL_KV, sim={"exact": True})
    assert fast.summary["num_preemptions"] == exact.summary["num_preemptions"] == 1
    assert finish_time_mismatches(fast.requests, exact.requests) == []
    # behind it the built-in's plans run one iteration each: it is asked at every one
    assert all(d.payload["iterations"] == 1 for d in _batches(fast))


class DecodeAllLong(Plugin):
    """Plans every batch itself: decodes of everything running for as many iterations as the outputs allow."""

    name = "decode-all-long"

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if worker.running and all(r.is_decoding for r in worker.running):
            return BatchPlan(decode=tuple(worker.running), max_iterations=10**6, reason="decode all")
        return None


def test_a_batchers_own_plan_of_several_iterations_still_runs_as_one_step():
    """The fast mode still runs the iterations a plugin asked for itself (it answers the same while nothing
    changes, as the hook's contract asks), and the built-in's behind the project's own plugins."""
    trace = make_trace(20, qps=4, output_tokens=40, seed=2)
    fast, exact = _both(trace, DecodeAllLong())
    assert any(d.payload["iterations"] > 1 for d in _batches(fast) if d.plugin == "decode-all-long")
    assert all(d.payload["iterations"] == 1 for d in _batches(fast) if d.plugin != "decode-all-long")
    _assert_agree(fast, exact)
    default = replay_with(trace=trace)
    assert any(d.payload["iterations"] > 1 for d in _batches(default))
