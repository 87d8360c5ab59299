"""The core's KV count: a batch start adds what joined to the last count, and gets the full count."""

from __future__ import annotations

import pytest

from controlplane.kv_cache import KVCacheManager
from controlplane.testing import make_requests, make_trace, make_worker, replay_with
from controlplane.types import UNLIMITED_KV_BLOCKS, RequestStatus
from tests.controlplane.test_exact_mode import _shared_prefix_trace


def _full_count(w, extra_tokens=0):
    bs = w.kv_block_size
    return sum(-(-r.context_tokens // bs) for r in w.running) + -(-extra_tokens // bs)


def test_a_batch_start_adds_the_joined_requests_to_the_last_count():
    kv = KVCacheManager(None)
    held = make_requests(3, prefix="h")
    for r, (computed, out) in zip(held, [(100, 5), (33, 0), (16, 16)]):
        r.num_computed_tokens, r.output_tokens = computed, out
    w = make_worker(running=list(held), num_kv_blocks=1000, kv_block_size=16)
    kv.recount(w)
    assert w.num_kv_blocks_used == _full_count(w) == 7 + 3 + 2
    new = make_requests(2, prefix="n")
    new[0].num_computed_tokens = 40  # a prefix hit before it joined
    w.running.extend(new)
    kv.batch_started(w, new, 300)
    assert w.num_kv_blocks_used == _full_count(w, 300) == 12 + 3 + 19
    kv.recount(w)  # the batch ended: back to what the running requests hold
    assert w.num_kv_blocks_used == 15


@pytest.mark.parametrize("change", ["block size", "no count yet", "running context changed"])
def test_a_batch_start_counts_everything_when_the_last_count_does_not_hold(change):
    kv = KVCacheManager(None)
    r = make_requests(1)[0]
    r.num_computed_tokens = 100
    w = make_worker(running=[r], num_kv_blocks=1000, kv_block_size=16)
    joined = []
    if change != "no count yet":
        kv.recount(w)
    if change == "block size":
        w.kv_block_size = 32  # a new memory plan
    if change == "running context changed":
        r.num_computed_tokens = 200
        joined = None
    kv.batch_started(w, joined, 10)
    assert w.num_kv_blocks_used == _full_count(w, 10)


def _checked(monkeypatch, prefill_ends=None):
    """Every batch start's count checked against a full count of the worker's running requests,
    and every prefill-only batch end's (appended to ``prefill_ends``) against a full count of
    those that stay running."""
    starts = []
    original = KVCacheManager.batch_started
    original_end = KVCacheManager.prefill_finished

    def batch_started(self, w, joined, prefill_tokens):
        original(self, w, joined, prefill_tokens)
        if w.num_kv_blocks < UNLIMITED_KV_BLOCKS:
            assert w.num_kv_blocks_used == _full_count(w, prefill_tokens)
            starts.append(joined is not None)

    def prefill_finished(self, w, prefill, done):
        original_end(self, w, prefill, done)
        if w.num_kv_blocks < UNLIMITED_KV_BLOCKS:
            bs = w.kv_block_size
            assert w.num_kv_blocks_used == sum(-(-r.context_tokens // bs) for r in w.running if r not in done)
            if prefill_ends is not None:
                prefill_ends.append(len(done))
    monkeypatch.setattr(KVCacheManager, "batch_started", batch_started)
    monkeypatch.setattr(KVCacheManager, "prefill_finished", prefill_finished)
    return starts


def test_a_prefill_only_batch_end_counts_its_own_requests_from_the_held_count():
    kv = KVCacheManager(None)
    held = make_requests(3, prefix="h")
    for r, (computed, out) in zip(held, [(100, 5), (33, 0), (16, 16)]):
        r.num_computed_tokens, r.output_tokens = computed, out
    chunk, whole, single = make_requests(3, prefix="p")
    for r in (chunk, whole, single):
        r.prompt_tokens = 100
    single.max_output_tokens = 1
    for r in (chunk, whole, single):  # joined the running set with the prefill batch that runs now
        r.status = RequestStatus.RUNNING
    w = make_worker(running=[*held, chunk, whole, single], num_kv_blocks=1000, kv_block_size=16)
    kv.recount(w)
    prefill = ((chunk, 40), (whole, 100), (single, 100))
    for r, n in prefill:  # what advance_batch does: the completed prompts sample a token
        r.num_computed_tokens += n
        if r.num_computed_tokens >= r.prompt_tokens:
            r.output_tokens += 1
    kv.prefill_finished(w, prefill, [single])  # single finished with its first token
    w.running.remove(single)
    assert w.num_kv_blocks_used == _full_count(w) == 12 + 3 + 7


@pytest.mark.parametrize("exact", [False, True])
def test_counts_in_a_replay_with_preemptions_equal_full_counts(monkeypatch, exact):
    ends: list[int] = []
    starts = _checked(monkeypatch, ends)
    res = replay_with(trace=make_trace(300, qps=8.0, output_tokens=200, seed=1), sim={"exact": exact},
                      cluster={"models": [{"name": "default", "replicas": 2, "num_kv_blocks": 150}]})
    assert res.summary["num_preemptions"] > 0
    assert len(starts) > 100 and sum(starts) > 100  # most from the held count
    assert exact or len(ends) > 50  # fast mode: prefill-only batch ends counted from the held count


def test_counts_in_a_replay_with_prefix_hits_equal_full_counts(monkeypatch):
    ends: list[int] = []
    starts = _checked(monkeypatch, ends)
    res = replay_with(
        trace=_shared_prefix_trace(300),
        cluster={"models": [{"name": "default", "replicas": 3, "num_kv_blocks": 120}]},
        plugins={"enabled": ["prefix-affinity", "prefix-cache", "continuous-batching", "fixed-replicas",
                             "static-memory", "builtin-latency-models"]},
    )
    assert res.summary["prefix_hits"] > 100 and sum(starts) > 100 and ends  # (few: a light load)


def test_blocks_after_k_iterations_is_the_count_once_they_are_applied():
    from controlplane.iterations import advance_batch
    from controlplane.types import Batch

    def setup():
        reqs = make_requests(3, prefix="b")
        for r in reqs:
            r.max_output_tokens = 50
        (a, b, c) = reqs
        a.num_computed_tokens, a.output_tokens = a.prompt_tokens, 7
        b.num_computed_tokens, b.output_tokens = b.prompt_tokens, 1
        return reqs, make_worker(running=list(reqs), num_kv_blocks=1000, kv_block_size=16)

    for k in (1, 2, 9):
        for kind in ("decode", "prefill"):
            reqs, w = setup()
            a, b, c = reqs
            batch = (Batch("1", w.worker_id, (), (a, b), k) if kind == "decode" else
                     Batch("1", w.worker_id, ((c, c.prompt_tokens),), (a, b), k, tuple(reqs)))
            predicted = KVCacheManager.blocks_after(w, batch, k)
            advance_batch(batch, k, 0.0)
            assert predicted == _full_count(w), (kind, k)
    reqs, w = setup()
    w.num_kv_blocks, w.num_kv_blocks_used = UNLIMITED_KV_BLOCKS, 0  # no budget: nothing counted
    assert KVCacheManager.blocks_after(w, Batch("1", w.worker_id, (), tuple(reqs[:2]), 3), 3) == 0
