"""Response-cache hits in a live run: timed as they happen (not at the plugin's simulated latency),
with a reason."""

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
