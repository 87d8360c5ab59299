"""Prefix reuse on live workers: block hashes of real token ids, the engine's prefix KV store."""

from __future__ import annotations

import random

import pytest
import torch

from controlplane.live.backend import CausalLMBackend, StopCondition
from controlplane.live.prefix_store import PrefixKVStore, block_hashes

NO_EOS = StopCondition(eos_token_ids=())


def test_block_hashes_are_chained_over_whole_blocks():
    a = block_hashes([1, 2, 3, 4, 5, 6, 7], 3)
    assert len(a) == 2  # the partial last block has no hash
    assert block_hashes([1, 2, 3, 4, 5, 6, 8], 3) == a  # only whole blocks count
    b = block_hashes([1, 2, 3, 9, 5, 6], 3)
    assert b[0] == a[0] and b[1] != a[1]
    assert block_hashes([9, 2, 3, 4, 5, 6], 3)[1] != a[1]  # a block's hash depends on what precedes it
    with pytest.raises(ValueError, match="block_tokens"):
        block_hashes([1], 0)


def _kv(n, layers=2):
    keys = [torch.arange(n, dtype=torch.float32).repeat(2, 1)[:, :, None].repeat(1, 1, 4) + 100 * i
            for i in range(layers)]
    return keys, [k + 0.5 for k in keys]


def test_store_matches_the_longest_block_prefix_and_evicts_lru():
    store = PrefixKVStore(capacity_tokens=16, block_tokens=4)
    sys_prompt = list(range(10, 18))  # two blocks
    assert store.store(sys_prompt + [1, 2, 3, 4], *_kv(12))
    m = store.match(sys_prompt + [7, 7, 7, 7, 7])
    assert m.tokens == 8 and m.keys[0].shape == (2, 8, 4) and float(m.keys[1][0, 7, 0]) == 107
    assert store.match(sys_prompt + [1, 2, 3, 4]).tokens == 11  # never the whole prompt: one token computed
    assert store.match([99] + sys_prompt) is None
    assert store.store(list(range(50, 58)), *_kv(8))  # 12 + 8 > 16: the least recently used goes
    assert store.tokens == 8 and store.match(sys_prompt + [1]) is None


def _prompts(n, shared, seed=0):
    rng = random.Random(seed)
    return [shared + [rng.randrange(4, 260) for _ in range(rng.randint(3, 20))] for _ in range(n)]


def _generate(engine, prompts, budget=8):
    out = {}
    for i, p in enumerate(prompts):  # one after the other: later ones find the earlier prefixes
        engine.add_request(f"r{i}", p, max_new_tokens=budget, stop=NO_EOS)
        res = engine.step([f"r{i}"], [])
        tokens = [res.by_id[f"r{i}"].token_id]
        while len(tokens) < budget:
            tokens.append(engine.step([], [f"r{i}"]).by_id[f"r{i}"].token_id)
        out[i] = (tokens, res.num_prefill_tokens, res.sum_prefill_context)
    return out


def test_reused_prefix_gives_the_same_tokens_and_computes_only_the_rest(tiny_loaded):
    shared = [random.Random(1).randrange(4, 260) for _ in range(48)]
    prompts = _prompts(4, shared)
    plain = _generate(CausalLMBackend(tiny_loaded, max_seq_len=256), prompts)
    reuse_engine = CausalLMBackend(tiny_loaded, max_seq_len=256, prefix_cache_tokens=1024, prefix_block_tokens=16)
    reuse = _generate(reuse_engine, prompts)
    for i in range(4):
        assert reuse[i][0] == plain[i][0], i  # greedy tokens identical with and without reuse
    assert reuse[0][2] == 0 and reuse[0][1] == len(prompts[0])
    for i in range(1, 4):
        assert reuse[i][2] == 48 and reuse[i][1] == len(prompts[i]) - 48


def test_a_batch_mixing_hits_and_misses_matches_the_plain_engine(tiny_loaded):
    shared = list(range(30, 62))
    first, *batch = _prompts(4, shared, seed=3)
    batch.append([5, 6, 7, 8, 9])  # no shared prefix, shorter than the others
    plain = CausalLMBackend(tiny_loaded, max_seq_len=256)
    reuse = CausalLMBackend(tiny_loaded, max_seq_len=256, prefix_cache_tokens=1024, prefix_block_tokens=16)
    results = []
    for engine in (plain, reuse):
        _generate(engine, [first])
        for i, p in enumerate(batch):
            engine.add_request(f"b{i}", p, max_new_tokens=6, stop=NO_EOS)
        ids = [f"b{i}" for i in range(len(batch))]
        res = engine.step(ids, [])
        toks = {k: [res.by_id[k].token_id] for k in ids}
        for _ in range(5):
            r = engine.step([], ids)
            for k in ids:
                toks[k].append(r.by_id[k].token_id)
        results.append((toks, res.sum_prefill_context))
    assert results[1][0] == results[0][0]
    assert results[1][1] == 32 * 3 and results[0][1] == 0


# -- the live driver: hashes on requests, hits reported like the simulator's, same text ----------

SYSTEM = ("You are a careful assistant for the accounts team. Answer in one short sentence, cite the "
          "policy section, never invent numbers, and say when you do not know. ") * 3
QUESTIONS = [f"Question {i}: what is the refund window for order {1000 + i}?" for i in range(4)]


def _live(tmp_path, prefix_cache_tokens, enabled_first=(), replicas=1):
    import asyncio

    from controlplane.config import DEFAULT_PLUGINS
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import EventLog, make_config

    worker = {"preset": "tiny-llama", "prefix_cache_tokens": prefix_cache_tokens, "prefix_block_tokens": 16}
    cfg = make_config(
        storage={"url": f"sqlite:///{tmp_path / f'live{prefix_cache_tokens}-{replicas}.db'}"},
        cluster={"models": [{"name": "tiny", "replicas": replicas, "worker": worker}]},
        plugins={"enabled": [*enabled_first, "prefix-cache", *DEFAULT_PLUGINS],
                 "settings": {"prefix-cache": {"capacity_blocks": prefix_cache_tokens // 16}}},
    )
    log = EventLog()

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1), record=False, extra_plugins=[log])
        await driver.start(wait_ready_s=120)
        try:
            out = []
            for q in QUESTIONS:  # one after another: each finds the system prompt's KV
                out.append(await driver.generate(SYSTEM + q, max_tokens=6, ignore_eos=True))
            return out
        finally:
            await driver.close()

    return asyncio.run(main()), log


def _reused_context(log):
    from controlplane.events import IterationTimed

    return [e.row["sum_prefill_context"] for e in log.events
            if isinstance(e, IterationTimed) and e.row.get("num_prefill_seqs")]


def test_live_requests_reuse_the_prefix_and_answer_the_same(tmp_path):
    # One replica: thread-pool workers that load at the same time do not get the same random weights.
    plain, _ = _live(tmp_path, 0)
    reuse, log = _live(tmp_path, 4096)
    assert [r.status for r in reuse] == ["completed"] * 4
    assert [r.text for r in reuse] == [r.text for r in plain]
    assert reuse[0].cache_hit is None and all(r.cache_hit == "prefix" for r in reuse[1:])
    assert all(r.cache_hit is None for r in plain)
    # The engine really reused KV: prefills after the first computed on top of cached context.
    reused = _reused_context(log)
    assert reused[0] == 0 and all(c > 0 for c in reused[1:])


def test_live_weighted_routing_follows_the_actual_prefix(tmp_path):
    from controlplane.types import Decision

    reuse, log = _live(tmp_path, 4096, enabled_first=("weighted-router",), replicas=2)
    assert [r.status for r in reuse] == ["completed"] * 4
    assert all(c > 0 for c in _reused_context(log)[1:])
    # The weighted router sent every follow-up to the replica holding the prefix, from its scores.
    routes = [d for d in log.events if isinstance(d, Decision) and d.hook == "cp_route_request" and d.action == "route"]
    workers = [d.payload["worker"] for d in routes]
    assert len(set(workers[1:])) == 1 and workers[1] == workers[0]
    assert all(d.payload["scores"][d.payload["worker"]]["prefix-cache-hit"] > 0.5 for d in routes[1:])
