"""Live prefix reuse keeps tenants apart: the engine's KV store and the driver's hits, unless shared."""

from __future__ import annotations

import asyncio

import pytest
import torch

from controlplane.live.prefix_store import PrefixKVStore

SECRET = "PIN-4471-SECRET! please reset my account password, the one for the payroll system. " * 2


def _kv(n, layers=2):
    keys = [torch.zeros(2, n, 4) + i for i in range(layers)]
    return keys, [k + 0.5 for k in keys]


def test_the_store_serves_a_prefix_only_in_the_scope_it_was_stored_in():
    store = PrefixKVStore(capacity_tokens=64, block_tokens=4)
    prompt = list(range(10, 22))
    assert store.store(prompt, *_kv(12), scope="team-a")
    assert store.match(prompt[:8] + [1], scope="team-b") is None  # another tenant's guess finds nothing
    assert store.match(prompt[:8] + [1]) is None  # nor does an untenanted one
    assert store.match(prompt[:8] + [1], scope="team-a").tokens == 8
    assert store.store(prompt, *_kv(12))  # the same prompt untenanted: an entry of its own
    assert store.match(prompt[:8] + [1]).tokens == 8


def _run(tmp_path, shared):
    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.events import IterationTimed
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import EventLog, make_config

    worker = {"preset": "tiny-llama", "prefix_cache_tokens": 4096, "prefix_block_tokens": 16}
    cfg = make_config(
        storage={"url": f"sqlite:///{tmp_path / f'tenancy-{shared}.db'}"},
        cluster={"models": [{"name": "tiny", "replicas": 1, "worker": worker}]},
        plugins={"enabled": ["prefix-cache", *DEFAULT_PLUGINS],
                 "settings": {"prefix-cache": {"capacity_blocks": 256, "shared_across_tenants": shared}}},
    )
    log = EventLog()

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1), record=False, extra_plugins=[log])
        await driver.start(wait_ready_s=120)
        try:
            out = [await driver.generate(SECRET + "thanks", max_tokens=2, tenant="team-a")]
            out.append(await driver.generate(SECRET + "zzz", max_tokens=2, tenant="team-b"))
            out.append(await driver.generate(SECRET + "again", max_tokens=2, tenant="team-a"))
            return out
        finally:
            await driver.close()

    results = asyncio.run(main())
    reused = [e.row["sum_prefill_context"] for e in log.events
              if isinstance(e, IterationTimed) and e.row.get("num_prefill_seqs")]
    return [r.cache_hit for r in results], reused


@pytest.mark.parametrize("shared", [False, True])
def test_another_tenants_guess_of_a_prompt_is_no_hit_unless_shared(tmp_path, shared):
    hits, reused = _run(tmp_path, shared)
    if shared:
        assert hits == [None, "prefix", "prefix"] and reused[0] == 0 and reused[1] > 0 and reused[2] > 0
    else:  # team-b's guess: no hit reported and no KV reused (nothing to time); team-a's own follow-up reuses
        assert hits == [None, None, "prefix"] and reused[:2] == [0, 0] and reused[2] > 0
