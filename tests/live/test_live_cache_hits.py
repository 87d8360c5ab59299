"""Response-cache hits in a live run: timed as they happen (not at the plugin's simulated latency),
with a reason, and the response caches' false-hit rate in the summary."""

from __future__ import annotations

from controlplane.live.driver import LiveDriver
from controlplane.testing import stored_rows
from tests.live.test_driver import config, run


def test_a_live_exact_hit_is_timed_as_it_happened_and_says_why(tmp_path):
    # Live hits were stamped with exact-cache's latency_s (e2e exactly 0.002 whatever the lookup took).
    # 30 s here: a lookup takes far less, so a row at 30 s would be the constant.
    cfg = config(tmp_path, plugins={"settings": {"exact-cache": {"latency_s": 30.0}}})

    async def body(d: LiveDriver):
        return [await d.generate("hi", max_tokens=4, temperature=0.0) for _ in range(2)]

    (miss, hit), summary, d = run(cfg, body)
    assert miss.cache_hit is None and hit.cache_hit == "exact"
    assert hit.reason == "exact cache hit (same prompt and parameters)"  # it was None
    assert hit.first_token_s == hit.finish_s and 0 <= hit.finish_s - hit.arrival_s < 30.0
    row = next(r for r in stored_rows(cfg.storage.url, d.run_id, "requests") if r["cache_hit"] == "exact")
    assert 0 <= row["e2e_s"] < 30.0 and row["tpot_s"] is None and row["reason"] == hit.reason
    assert summary["e2e_p99_s"] < 30.0


def test_a_live_run_with_the_semantic_cache_reports_its_false_hit_rate_and_loads_the_model_at_its_start(tmp_path):
    # Live summaries had no cache_false_hit_rate (the replay alone added it), and the embedding model was
    # loaded inside the first request's cp_cache_store, on the event loop (3-6.5 s after "ready").
    enabled = list(config(tmp_path).plugins.enabled)
    enabled.insert(enabled.index("exact-cache") + 1, "semantic-cache")
    cfg = config(tmp_path, plugins={"enabled": enabled})

    async def body(d: LiveDriver):
        loading = d.core.plugins.get("semantic-cache").preloading
        assert loading is not None  # started with the run, on a thread of its own
        r = await d.generate("Where is my new card?", max_tokens=4, temperature=0.0)
        return r, d.metrics.registry.get_sample_value("controlplane_cache_checked_hits_total")

    (r, checked), summary, d = run(cfg, body)
    assert r.ok and checked == 0.0
    assert summary["cache_checked_hits"] == 0 and summary["cache_false_hit_rate"] is None  # none verified yet
    assert d.session.run_id is not None
