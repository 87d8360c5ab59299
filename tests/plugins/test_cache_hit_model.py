"""Cache hits on traces without prompt text: repeated hash_ids, or a stated hit rate; the replay
summary's hit rate, false-hit rate and GPU-seconds saved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.testing import make_config, make_context, replay_with
from controlplane.types import Request, RequestStatus
from plugins.cache_hit_model import TraceHitModel
from sim.traces.record import TraceRequest


def _enabled(*extra: str) -> list[str]:
    return list(make_config().plugins.enabled) + list(extra)


def _trace(blocks: list[tuple[int, ...]], gap_s: float = 5.0) -> list[TraceRequest]:
    return [TraceRequest(request_id=f"r{i}", arrival_s=gap_s * i, prompt_tokens=512 * len(h), output_tokens=20,
                         hash_ids=h, hash_block_tokens=512) for i, h in enumerate(blocks)]


def test_repeated_hash_ids_hit_at_lookup_cost_and_the_summary_counts_the_saving():
    blocks = [(1, 2), (3,), (1, 2), (1, 2, 4), (3,), (1, 2)]
    res = replay_with(trace=_trace(blocks), plugins={"enabled": _enabled("trace-hit-model")})
    by_id = {r.request_id: r for r in res.requests}
    assert [by_id[f"r{i}"].cache_hit for i in range(6)] == [None, None, "exact", None, "exact", "exact"]
    hit, miss = by_id["r2"], by_id["r0"]
    assert hit.finish_s - hit.arrival_s == pytest.approx(0.002)  # lookup, no generation
    assert miss.finish_s - miss.arrival_s > 0.05
    assert hit.output_tokens == 20 and all(r.status is RequestStatus.COMPLETED for r in res.requests)
    s = res.summary
    assert s["cache_hit_rate"] == pytest.approx(0.5)
    # The one or two batches fitted (from the first hit on) cannot tell an iteration from a token: so only
    # the upper estimate (the hits computed one at a time) is above 0 (docs/caching.md).
    assert s["cache_gpu_seconds_saved_upper"] > 0 and s["cache_gpu_seconds_saved"] >= 0
    assert s["cache_false_hit_rate"] == 0.0  # exact duplicates: known correct
    plain = replay_with(trace=_trace(blocks))
    assert plain.summary["cache_hit_rate"] == 0 and plain.summary["cache_gpu_seconds_saved"] == 0


def test_the_saving_estimate_counts_busy_gpu_time_not_idle_replicas():
    # Four replicas for a trickle of requests: held GPU-seconds are mostly idle. The old estimate
    # (held GPU-seconds x hit tokens / computed tokens) read about 1,000x what the replicas executed.
    # (lengths vary, as in a real trace, so the batches tell an iteration's cost from a token's)
    trace = [TraceRequest(request_id=f"r{i}", arrival_s=2.0 * i, prompt_tokens=100 + 37 * i % 400,
                          output_tokens=5 + 13 * i % 50) for i in range(200)]
    settings = {"trace-hit-model": {"mode": "rate", "hit_rate": 0.5}}
    s = replay_with(trace=trace, plugins={"enabled": _enabled("trace-hit-model"), "settings": settings},
                    cluster={"models": [{"name": "default", "replicas": 4}]}).summary
    assert 0 < s["gpu_busy_seconds"] < s["gpu_seconds"] / 20
    # about half the requests hit: computing them batched or alone costs about what the others did
    assert 0 < s["cache_gpu_seconds_saved"] <= s["cache_gpu_seconds_saved_upper"] < 2 * s["gpu_busy_seconds"]
    plain = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 4}]}).summary
    measured = plain["gpu_busy_seconds"] - s["gpu_busy_seconds"]  # the GPU time the hits really saved
    # A trickle: every request ran alone, so what the hits saved is what computing them one at a time costs, the
    # upper estimate, to the fit's error (15.2969719 against 15.2967971; the fit of each batch as one observation
    # of its totals read 15.564 in the simulator's fast mode, 15.2967971 in its exact mode).
    assert s["cache_gpu_seconds_saved"] < measured == pytest.approx(s["cache_gpu_seconds_saved_upper"], rel=1e-4)


def test_stated_rate_hits_about_that_share_and_reports_the_stated_false_hits():
    trace = [TraceRequest(request_id=f"r{i}", arrival_s=0.5 * i, prompt_tokens=100, output_tokens=10)
             for i in range(600)]
    settings = {"trace-hit-model": {"mode": "rate", "hit_rate": 0.3, "false_hit_rate": 0.2, "kind": "semantic"}}
    res = replay_with(trace=trace, plugins={"enabled": _enabled("trace-hit-model"), "settings": settings})
    hits = [r for r in res.requests if r.cache_hit == "semantic"]
    assert 0.24 < len(hits) / 600 < 0.36  # binomial(600, 0.3): +-5 sd is 0.09
    assert all(r.finish_s - r.arrival_s == pytest.approx(0.012) for r in hits)  # lookup + embedding
    assert 0.1 < res.summary["cache_false_hit_rate"] < 0.3
    again = replay_with(trace=trace, plugins={"enabled": _enabled("trace-hit-model"), "settings": settings})
    assert [r.cache_hit for r in again.requests] == [r.cache_hit for r in res.requests]  # ctx.rng: same seed, same hits


def test_requests_with_text_are_left_to_the_real_caches():
    model = TraceHitModel(TraceHitModel.Settings(mode="rate", hit_rate=1.0))
    r = Request("a", 0.0, 10, 4, prompt="hi")
    assert model.cp_cache_lookup(ctx=make_context(), request=r) is None
    assert model.cp_cache_lookup(ctx=make_context(), request=Request("b", 0.0, 10, 4)) is not None


def test_hash_mode_forgets_after_the_ttl_and_needs_the_same_token_count():
    model = TraceHitModel(TraceHitModel.Settings(ttl_s=10))
    first = Request("a", 0.0, 1024, 30, hash_ids=(7, 8))
    first.output_tokens = 30
    model.cp_cache_store(ctx=make_context(now_s=0.0), request=first)
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=Request("b", 5.0, 1024, 30, hash_ids=(7, 8))).output_tokens == 30
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=Request("c", 5.0, 1000, 30, hash_ids=(7, 8))) is None
    assert model.cp_cache_lookup(ctx=make_context(now_s=11.0), request=Request("d", 11.0, 1024, 30, hash_ids=(7, 8))) is None


def test_hash_mode_repeats_with_params_equal_by_value_hit():
    # {"temperature": 0} and {"temperature": 0.0}, stop "###" and ["###"] were different keys: the repeat missed
    model = TraceHitModel()
    first = Request("a", 0.0, 1024, 30, hash_ids=(7, 8), params=(("temperature", 0), ("stop", "###")))
    first.output_tokens = 30
    model.cp_cache_store(ctx=make_context(), request=first)
    again = Request("b", 5.0, 1024, 30, hash_ids=(7, 8), params=(("stop", ("###",)), ("temperature", 0.0)))
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=again) is not None


def test_a_repeat_whose_traced_answer_has_another_length_is_not_served_the_cached_one():
    # Mooncake: 118 repeated prompts, 100 of them with another output length (another answer);
    # all 118 used to be "exact hits, none wrong", serving the first answer's length.
    model = TraceHitModel()
    first = Request("a", 0.0, 1024, 587, hash_ids=(7, 8))
    first.output_tokens = 587
    model.cp_cache_store(ctx=make_context(now_s=0.0), request=first)
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=Request("b", 5.0, 1024, 654, hash_ids=(7, 8))) is None
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=Request("c", 5.0, 1024, 20, hash_ids=(7, 8))) is None
    assert model.cp_cache_lookup(ctx=make_context(now_s=5.0), request=Request("d", 5.0, 1024, 587, hash_ids=(7, 8))).output_tokens == 587
    assert model.hits == 1


@pytest.mark.parametrize("settings,field", [({"mode": "rate"}, "hit_rate"), ({"hit_rate": 0.2}, "mode"),
                                            ({"mode": "rate", "hit_rate": 1.5}, "hit_rate"),
                                            ({"mode": "rate", "hit_rate": 0.2, "shared_across_tenants": True},
                                             "shared_across_tenants")])
def test_bad_settings_say_what_is_wrong(settings, field):
    with pytest.raises(ValidationError, match=field):
        TraceHitModel.Settings(**settings)


@pytest.mark.parametrize("settings", [{}, {"mode": "rate", "hit_rate": 1.0}])
def test_sampled_requests_without_a_seed_are_neither_served_nor_remembered(settings):
    # hash_ids mode served repeats sampled at temperature 0.8 (4 hits of 5, rate 0.8), which docs/caching.md
    # says are "neither cached nor looked up"; rate mode drew hits for them too
    model = TraceHitModel(TraceHitModel.Settings(**settings))
    sampled, seeded = (("temperature", 0.8),), (("seed", 3), ("temperature", 0.8))
    for params, served in ((sampled, False), (seeded, True)):
        first = Request("a", 0.0, 1024, 50, hash_ids=(11, 12), params=params)
        first.output_tokens = 50
        model.cp_cache_store(ctx=make_context(now_s=0.0), request=first)
        again = Request("b", 10.0, 1024, 50, hash_ids=(11, 12), params=params)
        assert (model.cp_cache_lookup(ctx=make_context(now_s=10.0), request=again) is not None) is served
    assert len(model.store) == (1 if model.settings.mode == "hash_ids" else 0)  # the seeded one only


def test_a_replay_of_sampled_repeats_has_no_hits():
    trace = [TraceRequest(request_id=f"s{i}", arrival_s=10.0 * i, prompt_tokens=100, output_tokens=50,
                          hash_ids=(11, 12), params=(("temperature", 0.8),)) for i in range(5)]
    res = replay_with(trace=trace, plugins={"enabled": _enabled("trace-hit-model")})
    assert res.summary["cache_hit_rate"] == 0 and res.summary["cache_checked_hits"] == 0
    assert res.summary["cache_false_hit_rate"] is None  # none checked: unknown


def test_a_repeat_hits_when_its_first_request_reused_prefix_blocks():
    # The shared prefix (1, 2) makes the later firsts prefix hits; their answers are still remembered (a prefix
    # hit stopped them from being stored: 0 hits on the Mooncake trace with prefix-cache, 22 without).
    blocks = [(1, 2, 3), (1, 2, 4), (1, 2, 3), (1, 2, 4), (1, 2, 5), (1, 2, 5)]
    enabled = ["queue-limit", "trace-hit-model", "least-loaded", "prefix-cache", "continuous-batching",
               "fixed-replicas", "static-memory", "builtin-latency-models"]
    res = replay_with(trace=_trace(blocks), plugins={"enabled": enabled},
                      cluster={"models": [{"name": "default", "replicas": 1, "num_kv_blocks": 2000}]})
    by_id = {r.request_id: r for r in res.requests}
    assert by_id["r1"].cache_hit == "prefix"  # computed, reusing (1, 2)
    assert [by_id[f"r{i}"].cache_hit for i in (2, 3, 5)] == ["exact", "exact", "exact"]


@pytest.mark.parametrize("shared,hits", [(False, ["r2"]), (True, ["r1", "r2"])])
def test_a_repeat_hits_only_its_own_tenants_answer_unless_shared(shared, hits):
    from dataclasses import replace

    trace = [replace(t, tenant=tenant) for t, tenant in zip(_trace([(1, 2)] * 3), ["acme", "globex", "acme"])]
    res = replay_with(trace=trace, plugins={"enabled": _enabled("trace-hit-model"),
                                            "settings": {"trace-hit-model": {"shared_across_tenants": shared}}})
    assert sorted(r.request_id for r in res.requests if r.cache_hit) == hits
