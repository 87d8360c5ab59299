"""The semantic cache: the threshold learner's bound, the neighbour vote, the HNSW index, and the
plugin on real all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane.testing import make_context
from controlplane.types import Request
from plugins.semantic_cache import SemanticCache, answers_match
from plugins.semantic_cache_index import VectorIndex
from plugins.semantic_cache_policy import ThresholdLearner, consensus_score, min_outcomes

# -- threshold learner --------------------------------------------------------------------------


def _outcomes(rng, n, p_wrong):
    scores = rng.random(n)
    return scores, rng.random(n) >= p_wrong(scores)


def test_no_threshold_before_enough_outcomes():
    learner = ThresholdLearner(bound=0.02, confidence=0.95, refit_every=1)
    assert min_outcomes(0.02, 0.95) == 149
    for _ in range(148):
        learner.observe(0.99, True)
    assert learner.threshold == float("inf")
    learner.observe(0.99, True)
    assert learner.threshold <= 0.99


@pytest.mark.parametrize("bound", [0.01, 0.02, 0.05])
def test_learned_threshold_meets_the_bound_on_fresh_data(bound):
    """Error falls with the score; the learned threshold's true error among hits is under the bound."""
    p_wrong = lambda s: 0.4 * (1 - s) ** 2  # noqa: E731
    rng = np.random.default_rng(1)
    violations = 0
    for trial in range(20):
        learner = ThresholdLearner(bound=bound, confidence=0.95, refit_every=10**9)
        for s, ok in zip(*_outcomes(rng, 20000, p_wrong)):
            learner.observe(s, ok)
        t = learner.refit()
        assert t < 1.0  # it serves something
        grid = np.linspace(t, 1, 20001)
        true_error = p_wrong(grid).mean()  # scores are uniform: the tail's mean error
        violations += true_error > bound
    assert violations <= 2  # 95% confidence: about 1 in 20 may miss


def test_the_threshold_is_as_low_as_the_bound_allows():
    learner = ThresholdLearner(bound=0.05, confidence=0.95, refit_every=10**9)
    rng = np.random.default_rng(2)
    for s, ok in zip(*_outcomes(rng, 8000, lambda s: np.where(s >= 0.6, 0.0, 0.5))):
        learner.observe(s, ok)
    # Tail error at t < 0.6: 0.5 (0.6 - t) / (1 - t); <= 5% needs t >= about 0.56
    assert 0.54 <= learner.refit() <= 0.61


def test_the_threshold_never_crosses_scores_nothing_was_verified_at():
    # Outcomes at 1.0 and at 0.6 or below, none between: the threshold fell from 1.0 to 0.55, and a
    # harness's paraphrases at 0.97-0.99 (never verified) were served another prompt's answer.
    learner = ThresholdLearner(bound=0.05, confidence=0.95, refit_every=10**9)
    for i in range(300):
        learner.observe(1.0 - 1e-5 * i, True)
    for i in range(10):
        learner.observe(0.55 + 0.005 * i, True)
    for i in range(3):
        learner.observe(0.3 + 0.1 * i, False)
    assert 0.9 < learner.refit() < 1.0  # down to a band below the verified scores, not across the gap
    # A start whose own outcomes leave the gap (fewer than 3x the minimum above it): nothing is served.
    learner = ThresholdLearner(bound=0.05, confidence=0.95, refit_every=10**9)
    for i in range(100):
        learner.observe(1.0 - 1e-5 * i, True)
        learner.observe(0.6 - 1e-5 * i, True)
    assert learner.refit() == float("inf")


def test_a_verified_false_hit_refits_at_once():
    learner = ThresholdLearner(bound=0.05, confidence=0.95, refit_every=25)
    for i in range(600):
        learner.observe(1.0 - i / 1000, True)  # 0.4-1.0, all correct
    served_from = learner.threshold
    for _ in range(6):  # wrong answers just above the threshold: each one refits
        learner.observe(served_from + 0.01, False)
    assert learner.threshold > served_from


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="bound"):
        ThresholdLearner(bound=0)
    with pytest.raises(ValueError, match="confidence"):
        ThresholdLearner(confidence=1.0)


def test_a_mixed_neighbourhood_scores_lower_than_an_agreeing_one():
    sims = np.array([0.9, 0.89, 0.88, 0.7])
    agree = consensus_score(sims, np.array([True, True, True, True]), 0.05)
    mixed = consensus_score(sims, np.array([True, False, False, True]), 0.05)
    assert agree == pytest.approx(0.9) and mixed < 0.45


# -- index ---------------------------------------------------------------------------------------


def _unit(rng, n, d=16):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_index_finds_the_nearest_and_keeps_ids_across_removal_and_rebuild():
    rng = np.random.default_rng(0)
    v = _unit(rng, 3000)
    index = VectorIndex(16)
    ids = index.add(v, [f"p{i}" for i in range(3000)])
    assert ids == list(range(3000))
    sim, best = index.search(v[42], 1)[0]
    assert best == 42 and sim == pytest.approx(1.0, abs=1e-5)
    for i in range(2000):  # past a quarter dead: rebuilt from the live vectors
        index.remove(i)
    assert len(index) == 1000 and index.dead < 1000
    assert index.search(v[2500], 1)[0][1] == 2500 and index.payload(2500) == "p2500"
    assert all(i >= 2000 for _, i in index.search(v[10], 5))


def test_index_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="dim 16"):
        VectorIndex(16).add(np.zeros((2, 8), np.float32), ["a", "b"])


# -- the plugin on the real model ---------------------------------------------------------------

ARRIVAL = ["Where is my new card?", "My card has not arrived yet", "When will my card be delivered?",
           "I am still waiting for my card to arrive", "How long does card delivery take?",
           "Has my card been sent out yet?"]
CANCEL = ["How do I cancel a transfer?", "I want to stop a payment I just made",
          "Can I reverse a transfer I sent by mistake?", "Please cancel my last transaction",
          "Is it possible to undo a bank transfer?", "I need to cancel the money I sent"]


def _req(rid, prompt, params=(), model="default", max_out=64, tenant=None):
    return Request(rid, 0.0, 10, max_out, model=model, prompt=prompt, params=params, tenant=tenant)


def _serve(cache, ctx, rid, prompt, answer, **kw):
    """A request as the core runs it: lookup, and on a miss the model's answer is stored."""
    r = _req(rid, prompt, **kw)
    hit = cache.cp_cache_lookup(ctx=ctx, request=r)
    if hit is None:
        r.output_text, r.output_tokens = answer, 5
        cache.cp_cache_store(ctx=ctx, request=r)
    return hit


@pytest.fixture(scope="module")
def learned():
    """A cache that has seen both intents twice over (a loose bound so that a dozen outcomes do)."""
    # (two dozen outcomes spread over 0.1-1.0: a band as wide as the evidence is sparse)
    cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=0.3, confidence=0.5, explore_rate=0.0, band=0.3))
    ctx = make_context(seed=3)
    for rep in range(2):
        for i, (a, c) in enumerate(zip(ARRIVAL, CANCEL)):
            _serve(cache, ctx, f"a{rep}{i}", a + ("" if rep == 0 else " please"), "CARD_ARRIVAL")
            _serve(cache, ctx, f"c{rep}{i}", c + ("" if rep == 0 else " please"), "CANCEL_TRANSFER")
    cache.learner.refit()
    return cache


def test_a_paraphrase_gets_its_intent_s_answer_and_an_unrelated_prompt_misses(learned):
    ctx = make_context(seed=4)
    assert learned.learner.threshold < 1.0
    hit = learned.cp_cache_lookup(ctx=ctx, request=_req("x", "my card still hasn't come, where is it?"))
    assert hit is not None and hit.kind == "semantic" and hit.response_text == "CARD_ARRIVAL"
    assert hit.latency_s == pytest.approx(0.011) and hit.output_tokens == 5  # lookup + embedding
    hit = learned.cp_cache_lookup(ctx=ctx, request=_req("y", "how can I cancel a payment I made?"))
    assert hit is not None and hit.response_text == "CANCEL_TRANSFER"
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("z", "What is the capital of Australia?")) is None


def test_other_params_or_models_never_match(learned):
    ctx = make_context(seed=4)
    prompt = "my card still hasn't come, where is it?"
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("p", prompt, params=(("top_p", 0.5),))) is None
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("m", prompt, model="other")) is None
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("t", prompt, params=(("temperature", 0.8),))) is None
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("s", prompt, max_out=3)) is None  # answer needs 5


def test_params_equal_by_value_share_a_partition():
    # {"temperature": 0} and {"temperature": 0.0}, stop "###" and ["###"] were separate partitions
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    ctx = make_context()
    assert _serve(cache, ctx, "a", ARRIVAL[0], "CARD_ARRIVAL", params=(("temperature", 0), ("stop", "###"))) is None
    hit = _serve(cache, ctx, "b", ARRIVAL[0], "x", params=(("temperature", 0.0), ("stop", ("###",))))
    assert hit is not None and hit.kind == "exact" and hit.response_text == "CARD_ARRIVAL"
    assert len(cache._indexes) == 1


def test_explored_would_be_hits_are_verified_and_a_wrong_one_is_learned():
    cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=0.3, confidence=0.5, explore_rate=1.0,
                                                 band=0.3))
    ctx = make_context(seed=5)
    for i, a in enumerate(ARRIVAL):
        _serve(cache, ctx, f"a{i}", a, "CARD_ARRIVAL")
    for i, a in enumerate(ARRIVAL):  # paraphrased again: misses verify a perfect agreement
        _serve(cache, ctx, f"b{i}", a + " please", "CARD_ARRIVAL")
    cache.learner.refit()
    assert cache.learner.threshold < 1.0 and cache.stats["outcomes"] >= 6
    r = _req("e", "Where's my new card?")
    assert cache.cp_cache_lookup(ctx=ctx, request=r) is None  # explored: served by the model
    assert cache.stats["explored"] == 1
    r.output_text, r.output_tokens = "SOMETHING_ELSE", 5  # the model disagrees with the cache
    cache.cp_cache_store(ctx=ctx, request=r)
    assert (cache.stats["explored_verified"], cache.stats["explored_wrong"]) == (1, 1)
    assert cache.measured_false_hit_rate == 1.0
    assert cache.cache_report() == {"checked_hits": 1, "false_hits": 1}


def test_identical_prompts_are_exact_hits_that_teach_nothing_about_paraphrases():
    # benchmarks/semantic_false_hits.py in small: prompts repeated, then paraphrases whose answers are their
    # own. The learner took the repeats' agreement (score up to 1.0) as evidence for paraphrases and served
    # them another prompt's answer (there, before: 132 of 665 hits wrong under a 5% bound).
    import random

    prompts = [f"How do I {v} my {o}?" for v in ("reset", "close", "delete") for o in ("password", "account")]
    paraphrases = [p.replace("How do I", "What is the way to") for p in prompts]
    cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=0.3, confidence=0.5, explore_rate=0.0))
    ctx, pick, hits = make_context(seed=0), random.Random(5), {"exact": 0, "semantic": 0, "wrong": 0}
    for i in range(60):
        p = pick.choice(prompts if i < 40 else paraphrases)
        hit = _serve(cache, ctx, f"r{i}", p, f"answer to {p}")
        if hit is not None:
            hits[hit.kind] += 1
            hits["wrong"] += hit.response_text != f"answer to {p}"
    assert hits["wrong"] == 0 and hits["semantic"] == 0 and hits["exact"] >= 40
    assert cache.stats["exact_hits"] == hits["exact"]
    assert all(score < 0.999 for score, _ in cache.learner._outcomes)  # no outcome from a repeat


def test_an_answer_that_never_reaches_the_store_is_neither_cached_nor_learned():
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    ctx = make_context()
    cache.cp_cache_lookup(ctx=ctx, request=_req("a", ARRIVAL[0]))  # then a guardian blocks it
    assert sum(len(ix) for ix in cache._indexes.values()) == 0 and cache.stats["outcomes"] == 0
    served = _req("b", ARRIVAL[0])
    served.cache_hit, served.output_text = "semantic", "X"
    cache.cp_cache_store(ctx=ctx, request=served)  # served from a cache: not stored again
    assert sum(len(ix) for ix in cache._indexes.values()) == 0


def test_entries_expire_and_capacity_drops_the_oldest():
    cache = SemanticCache(SemanticCache.Settings(capacity=3, ttl_s=10, max_false_hit_rate=0.3, confidence=0.5))
    for i, a in enumerate(ARRIVAL[:5]):
        _serve(cache, make_context(now_s=float(i)), f"a{i}", a, "CARD_ARRIVAL")
    assert sum(len(ix) for ix in cache._indexes.values()) == 3
    vec = cache.embedder.encode([ARRIVAL[4]])[0]
    _, nearest, sim = cache.evaluate(vec, _req("q", ARRIVAL[4]), 5.0)
    assert sim == pytest.approx(1.0, abs=1e-4)
    _, nearest, _ = cache.evaluate(vec, _req("q", ARRIVAL[4]), 100.0)
    assert nearest is None  # all expired


def test_the_same_seed_gives_the_same_decisions():
    def run(seed):
        cache = SemanticCache(SemanticCache.Settings(max_false_hit_rate=0.3, confidence=0.5, explore_rate=0.5,
                                                     band=0.3))
        ctx = make_context(seed=seed)
        out = []
        for rep, ending in enumerate(["", " please", " thanks", "!", " now", " today", " again", " asap"]):
            for i, a in enumerate(ARRIVAL):  # the threshold is refitted every 25 outcomes
                out.append(_serve(cache, ctx, f"{rep}-{i}", a + ending, "CARD_ARRIVAL") is not None)
        return out, cache.stats["explored"]

    assert run(7) == run(7)
    assert run(7)[1] > 0


def test_answers_match_ignores_case_and_spacing_only():
    assert answers_match("Your card  arrives\nin 3 days.", "your card arrives in 3 days.")
    assert not answers_match("Your card arrives in 3 days.", "Your card arrives in 5 days.")
    assert not answers_match(None, None)


def test_a_replay_without_answer_text_never_embeds_a_prompt():
    # The simulator generates no answer text, so the cache can neither serve nor learn: it used to
    # embed every prompt anyway (a 500-request text trace took 8.8 s instead of 0.1 s).
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    from plugins.semantic_cache_embed import MiniLMEmbedder

    class Counting(MiniLMEmbedder):  # the real model, counting the texts it embeds
        texts = 0

        def encode(self, texts):
            Counting.texts += len(texts)
            return super().encode(texts)

    cache = SemanticCache()
    cache.embedder = Counting()
    prompts = ARRIVAL + CANCEL
    trace = [TraceRequest(f"r{i}", float(i), 12, 8, prompt=p) for i, p in enumerate(prompts)]
    res = replay_with(cache, trace=trace)
    assert res.summary["num_completed"] == len(prompts) and res.summary["cache_hits"] == 0
    assert cache.stats["lookups"] == len(prompts)
    assert Counting.texts == 0
    assert not cache._indexes  # no text-less entries stored


def test_the_first_answer_of_a_partition_is_embedded_at_store_and_found_next_time():
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    ctx = make_context()
    assert _serve(cache, ctx, "a", ARRIVAL[0], "CARD_ARRIVAL") is None  # nothing cached: no embedding yet
    assert sum(len(ix) for ix in cache._indexes.values()) == 1
    vec = cache.embedder.encode([ARRIVAL[0]])[0]
    _, nearest, sim = cache.evaluate(vec, _req("q", ARRIVAL[0]), 0.0)
    assert nearest.text == "CARD_ARRIVAL" and sim == pytest.approx(1.0, abs=1e-4)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")
def test_a_cuda_device_on_a_machine_without_one_is_refused_at_the_start_naming_the_key():
    from controlplane.errors import ConfigError
    from controlplane.testing import make_config, make_trace, replay_with

    enabled = list(make_config().plugins.enabled) + ["semantic-cache"]
    with pytest.raises(ConfigError) as info:
        replay_with(trace=make_trace(3), plugins={"enabled": enabled, "settings": {"semantic-cache": {"device": "cuda"}}})
    assert "plugins.settings.semantic-cache.device" in str(info.value)
    assert "no CUDA device is available" in str(info.value)


def test_a_device_torch_does_not_know_is_refused():
    with pytest.raises(ValueError, match="device\n.*not a device torch knows"):
        SemanticCache.Settings(device="gpu0")
    assert SemanticCache.Settings(device="cpu").device == "cpu"


def test_loading_the_index_logs_no_faiss_loader_fallbacks_at_info():
    # a daemon logging at INFO showed 'ModuleNotFoundError("No module named faiss.swigfaiss_avx2")'
    # three times: faiss's loader trying builds this CPU lacks, not an error
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from plugins.semantic_cache_index import VectorIndex; VectorIndex(4)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ModuleNotFoundError" not in out.stderr and "faiss.loader" not in out.stderr, out.stderr


def test_a_replay_with_the_semantic_cache_imports_no_scipy_torch_or_faiss():
    # docs/caching.md: enabling it "costs the replay no time"; scipy.stats alone took about 5 s to import.
    import subprocess
    import sys

    code = ("import sys\n"
            "from controlplane.testing import make_config, replay_with\n"
            "from sim.traces.record import TraceRequest\n"
            "enabled = list(make_config().plugins.enabled) + ['semantic-cache']\n"
            "trace = [TraceRequest(f'r{i}', float(i), 12, 8, prompt=f'question {i % 3}') for i in range(9)]\n"
            "res = replay_with(trace=trace, plugins={'enabled': enabled})\n"
            "assert res.summary['num_completed'] == 9\n"
            "heavy = {'scipy', 'torch', 'faiss', 'sentence_transformers'}\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_live_run_loads_the_embedding_model_when_it_starts_off_the_caller_s_thread():
    # The model was loaded inside the first request's cp_cache_store, on the daemon's event loop: the
    # first request after "ready" stalled it 3-6.5 s.
    from plugins import semantic_cache_embed

    semantic_cache_embed._load_once.cache_clear()  # not loaded in this process yet
    sim_ctx, live_ctx = make_context(), make_context()
    live_ctx.run.mode = "live"
    cache = SemanticCache()
    cache.cp_run_started(ctx=sim_ctx)
    assert cache.preloading is None  # a replay may never need it (no answer text): never loaded for nothing
    cache.cp_run_started(ctx=live_ctx)
    assert cache.preloading.name == "semantic-cache-embedder-cpu"
    cache.preloading.join(timeout=600)
    assert semantic_cache_embed._load_once.cache_info().currsize == 1  # loaded before any lookup asked


def test_while_the_model_loads_live_lookups_miss_and_answers_are_not_stored_without_waiting(caplog):
    # The first cp_cache_store embedded its prompt, and so waited on the event loop for the model that
    # cp_run_started's thread was still loading (3.5 s).
    import threading

    class Counting:
        dim = 4
        calls = 0

        def encode(self, texts):
            Counting.calls += 1
            return np.tile(np.array([1.0, 0, 0, 0], dtype=np.float32), (len(texts), 1))

    loaded = threading.Event()
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    cache.embedder = Counting()
    cache.preloading = threading.Thread(target=loaded.wait, daemon=True)  # the load, not finished
    cache.preloading.start()
    ctx = make_context()
    with caplog.at_level("WARNING", logger="plugins.semantic_cache"):
        assert _serve(cache, ctx, "a", ARRIVAL[0], "CARD_ARRIVAL") is None
        assert _serve(cache, ctx, "b", ARRIVAL[0], "CARD_ARRIVAL") is None
    assert Counting.calls == 0 and not cache._indexes  # nothing embedded, nothing stored
    assert cache.stats["skipped_loading"] == 4  # two lookups, two stores
    assert sum("still loading" in r.getMessage() for r in caplog.records) == 1
    loaded.set()
    cache.preloading.join(timeout=5)
    assert _serve(cache, ctx, "c", ARRIVAL[0], "CARD_ARRIVAL") is None  # loaded: stored
    hit = _serve(cache, ctx, "d", ARRIVAL[0], "x")
    assert hit is not None and hit.response_text == "CARD_ARRIVAL" and cache.stats["skipped_loading"] == 4


def test_the_false_hit_rate_of_verified_would_be_hits_goes_into_the_summary():
    cache = SemanticCache()
    summary = {"num_requests": 10}
    cache.cp_run_finished(ctx=make_context(), summary=summary)
    assert (summary["cache_checked_hits"], summary["cache_false_hit_rate"]) == (0, None)  # known: none verified
    cache.stats.update(explored_verified=8, explored_wrong=2)
    summary = {"cache_checked_hits": 2, "cache_false_hits": 0, "cache_false_hit_rate": 0.0}  # another cache's
    cache.cp_run_finished(ctx=make_context(), summary=summary)
    assert summary == {"cache_checked_hits": 10, "cache_false_hits": 2, "cache_false_hit_rate": 0.2}


def test_an_answer_computed_after_a_prefix_cache_hit_is_stored_and_served_next_time():
    # cache_hit == "prefix" (prompt KV blocks reused) is truthy: cp_cache_store returned before storing,
    # although the model computed the answer; only a response-cache hit is not stored again.
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    ctx = make_context()
    r = _req("a", ARRIVAL[0])
    assert cache.cp_cache_lookup(ctx=ctx, request=r) is None
    r.cache_hit, r.output_text, r.output_tokens = "prefix", "CARD_ARRIVAL", 5
    cache.cp_cache_store(ctx=ctx, request=r)
    hit = cache.cp_cache_lookup(ctx=ctx, request=_req("b", ARRIVAL[0]))
    assert hit is not None and hit.kind == "exact" and hit.response_text == "CARD_ARRIVAL"


def test_cached_answers_stay_with_their_tenant_unless_shared_across_tenants(learned):
    # The partition was model and params only: tenant b was served tenant a's answer, exact and paraphrase.
    ctx = make_context(seed=4)
    paraphrase = "my card still hasn't come, where is it?"
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("u", paraphrase)) is not None  # untenanted: one partition
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("t", paraphrase, tenant="b")) is None
    assert learned.cp_cache_lookup(ctx=ctx, request=_req("e", ARRIVAL[0], tenant="b")) is None
    for shared, b_hits in ((False, False), (True, True)):
        cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0, shared_across_tenants=shared))
        _serve(cache, ctx, "a", "What is our Q3 revenue?", "TENANT_A_SECRET", tenant="a")
        hit = cache.cp_cache_lookup(ctx=ctx, request=_req("a2", "What is our Q3 revenue?", tenant="a"))
        assert hit is not None and hit.response_text == "TENANT_A_SECRET"
        hit = cache.cp_cache_lookup(ctx=ctx, request=_req("b", "What is our Q3 revenue?", tenant="b"))
        assert (hit is not None) is b_hits
        assert cache.cp_cache_lookup(ctx=ctx, request=_req("n", "What is our Q3 revenue?")) is None or shared


def _lengths(cache, ctx, prompt, asks):
    """Requests for ``prompt`` at each (max_tokens, tokens the model answers with); hit or miss each."""
    out = []
    for i, (wants, answers) in enumerate(asks):
        r = _req(f"{prompt}-{i}", prompt, params=(("temperature", 0),), max_out=wants)
        hit = cache.cp_cache_lookup(ctx=ctx, request=r)
        if hit is not None:
            assert hit.output_tokens <= wants
        else:
            r.output_text, r.output_tokens = " ".join(["w"] * answers), answers
            cache.cp_cache_store(ctx=ctx, request=r)
        out.append("hit" if hit else "miss")
    return out


def test_answers_cut_at_different_max_tokens_are_kept_side_by_side():
    # One answer per prompt was looked at (the first of the same text): "len test sem" at max_tokens
    # 4, 200, 200, 4, 4 gave miss, miss, hit, miss, hit. Like the exact cache, the second 4 now hits.
    cache = SemanticCache(SemanticCache.Settings(explore_rate=0.0))
    ctx = make_context()
    cut = [(4, 4), (200, 200), (200, 200), (4, 4), (4, 4), (200, 200), (4, 4)]
    assert _lengths(cache, ctx, "len test sem", cut) == ["miss", "miss", "hit", "hit", "hit", "hit", "hit"]
    # An answer that stopped by itself (30 tokens) serves any max_tokens with room for it, beside the cut ones.
    asks = [(100, 30), (20, 20), (50, 30), (20, 20), (100, 30), (30, 30), (25, 25), (25, 25)]
    assert _lengths(cache, ctx, "stops by itself", asks) == ["miss", "miss", "hit", "hit", "hit", "hit", "miss", "hit"]
    # One entry per prompt and slot: an answer for a slot replaces the old one (two misses in flight).
    for rid in ("x", "y"):
        r = _req(rid, "in flight twice", params=(("temperature", 0),))
        assert cache.cp_cache_lookup(ctx=ctx, request=r) is None
    for rid, text in (("x", "FIRST"), ("y", "SECOND")):
        r = _req(rid, "in flight twice", params=(("temperature", 0),))
        r.output_text, r.output_tokens = text, 5
        cache.cp_cache_store(ctx=ctx, request=r)
    assert sum(len(ix) for ix in cache._indexes.values()) == 2 + 3 + 1  # 4 and 200; 30, 20 and 25; one
    hit = cache.cp_cache_lookup(ctx=ctx, request=_req("z", "in flight twice", params=(("temperature", 0),)))
    assert hit.response_text == "SECOND"
