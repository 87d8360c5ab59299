"""GPU memory planning: static limits."""

from __future__ import annotations

from controlplane.testing import make_config, make_context, make_worker
from controlplane.types import UNLIMITED_KV_BLOCKS as UNLIMITED_BLOCKS
from plugins.memory import StaticMemory


def _plan(trigger: str, worker=None, **deployment):
    config = make_config(cluster={"models": [{"name": "default", **deployment}]})
    worker = worker or make_worker()
    return StaticMemory().cp_plan_memory(ctx=make_context(config=config, workers=[worker]), worker=worker, trigger=trigger)


def test_ready_takes_the_deployment_limits():
    p = _plan("ready", max_num_seqs=32, max_batch_tokens=2048, kv_block_size=32, num_kv_blocks=500)
    assert (p.max_num_seqs, p.max_batch_tokens, p.kv_block_size, p.num_kv_blocks) == (32, 2048, 32, 500)
    assert p.reason == "500 KV blocks from config"


def test_no_kv_budget_means_unlimited():
    p = _plan("ready")
    assert p.num_kv_blocks == UNLIMITED_BLOCKS and "unlimited" in p.reason


def test_out_of_memory_halves_the_batch_limits_down_to_one():
    w = make_worker(max_num_seqs=64, max_batch_tokens=4096, num_kv_blocks=300)
    p = _plan("out_of_memory", w)
    assert (p.max_num_seqs, p.max_batch_tokens, p.num_kv_blocks) == (32, 2048, 300)
    w = make_worker(max_num_seqs=1, max_batch_tokens=1)
    p = _plan("out_of_memory", w)
    assert (p.max_num_seqs, p.max_batch_tokens) == (1, 1)
