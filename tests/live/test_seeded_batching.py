"""Seeded requests on a live worker under ``dynamic-batching`` (plugins.dynamic_batching): the seed is a
request's own draws, not a batching key, so seeded requests share a batch and still get their own tokens."""

from __future__ import annotations

import asyncio

from controlplane.live.driver import LiveDriver
from controlplane.live.iteration_log import IterationLog
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.testing import make_config


def _serve(prompts_and_seeds, max_wait_s):
    """Each (prompt ids, seed) submitted at once to one tiny-llama worker under dynamic-batching:
    (the text of each, the prompts each prefill iteration took)."""
    cfg = make_config(
        plugins={"enabled": ["queue-limit", "least-loaded", "dynamic-batching", "fixed-replicas", "static-memory"],
                 "settings": {"dynamic-batching": {"max_wait_s": max_wait_s}}},
        cluster={"models": [{"name": "tiny", "replicas": 1,
                             "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}]})

    async def main():
        log = IterationLog()
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1), extra_plugins=[log])
        await driver.start(wait_ready_s=120)
        try:
            handles = [await driver.submit(ids, max_tokens=4, temperature=0.9, seed=seed, ignore_eos=True)
                       for ids, seed in prompts_and_seeds]
            results = [await h.result() for h in handles]
        finally:
            await driver.close()
        assert all(r.ok for r in results), results
        return ([r.text for r in results],
                [s.row["num_prefill_seqs"] for s in log.samples if s.row["num_prefill_seqs"]])

    return asyncio.run(main())


def test_eight_seeded_requests_share_one_batch_and_draw_as_they_would_alone():
    requests = [([5 + i] * 6, 100 + i) for i in range(8)]
    batched, prefills = _serve(requests, max_wait_s=5.0)
    assert prefills == [8]  # one batch (the seeds made 8 groups of one: 8 batches, each waiting max_wait_s)
    alone = [_serve([r], max_wait_s=0.0)[0][0] for r in requests[:2]]
    assert batched[:2] == alone  # the same draws in a batch of 8 as alone
