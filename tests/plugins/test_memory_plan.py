"""The memory plan: KV blocks and cold starts derived from the model, GPU and weight precision."""

from __future__ import annotations

import pytest

from controlplane import events as ev
from controlplane.testing import ScaleTo, make_config, make_context, make_trace, make_worker, replay_with
from controlplane.hardware.memory_plan import (
    DEFAULT_COLD_START_S,
    cold_start_s,
    deployment_cold_start_s,
    plan_replica_memory,
)
from controlplane.types import UNLIMITED_KV_BLOCKS as UNLIMITED_BLOCKS
from plugins.memory import StaticMemory

LLAMA70 = "meta-llama/Llama-2-70b-hf"
ANCHOR = {"name": "default", "gpu": "a100-80gb", "gpus_per_replica": 2, "latency": {"model": LLAMA70}}


def _deployment(**fields):
    return make_config(cluster={"models": [{**ANCHOR, **fields}]}).cluster.models[0]


def _plan(settings=None, **fields):
    config = make_config(cluster={"models": [{**ANCHOR, **fields}]})
    worker = make_worker()
    plugin = StaticMemory(StaticMemory.Settings(**(settings or {})))
    return plugin.cp_plan_memory(ctx=make_context(config=config, workers=[worker]), worker=worker, trigger="ready")


def test_the_vidur_anchor_replica_gets_3328_blocks_from_its_memory_plan():
    p = _plan()
    assert p.num_kv_blocks == 3328 and p.kv_block_size == 16
    assert "memory plan" in p.reason and "63.75 GiB" in p.reason


def test_model_spec_names_the_model_when_the_latency_settings_do_not():
    p = _plan(latency={}, model_spec=LLAMA70)
    assert p.num_kv_blocks == 3328


def test_an_explicit_num_kv_blocks_overrides_the_plan():
    p = _plan(num_kv_blocks=1000)
    assert p.num_kv_blocks == 1000 and p.reason == "1000 KV blocks from config"


def test_weight_precision_changes_weight_memory_and_so_kv_capacity():
    blocks = {prec: _plan(precision=prec).num_kv_blocks for prec in ("fp16", "int8", "nf4")}
    assert blocks["fp16"] < blocks["int8"] < blocks["nf4"]
    for prec, n in blocks.items():  # the plugin is the memory model's plan, nothing else
        assert n == plan_replica_memory(LLAMA70, "a100-80gb", tensor_parallel=2, precision=prec).num_kv_blocks


def test_block_size_tensor_parallel_and_settings_reach_the_plan():
    assert _plan(kv_block_size=32).num_kv_blocks == 3328 // 2
    assert _plan(gpus_per_replica=4).num_kv_blocks > 3328
    # Block-granular (vLLM) instead of Vidur's whole 4,096-token request slots: a little more.
    assert _plan({"request_slot_tokens": None}).num_kv_blocks > 3328
    assert _plan({"memory_fraction": 0.95}).num_kv_blocks > 3328


def test_unknown_models_leave_the_budget_as_configured():
    assert _plan(latency={"model": "someone/unlisted-model"}).num_kv_blocks == UNLIMITED_BLOCKS
    assert _plan(latency={}).num_kv_blocks == UNLIMITED_BLOCKS
    from controlplane.errors import ConfigError

    # an explicit model_spec must be known: refused when the config loads, naming the key
    with pytest.raises(ConfigError, match="cluster.models.0.model_spec: unknown model 'someone/unlisted-model'"):
        _plan(model_spec="someone/unlisted-model")


def test_a_model_that_does_not_fit_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        _plan(gpus_per_replica=1)


def test_cold_start_is_derived_from_the_weights_unless_set():
    d = _deployment()
    assert deployment_cold_start_s(d) == pytest.approx(cold_start_s(LLAMA70, "fp16", 2))
    assert deployment_cold_start_s(_deployment(precision="int8")) < deployment_cold_start_s(d)
    assert deployment_cold_start_s(_deployment(cold_start_s=7.0)) == 7.0
    assert deployment_cold_start_s(_deployment(latency={})) == DEFAULT_COLD_START_S
    assert make_config().cluster.models[0].cold_start_s is None  # the field's default means "derived"


def test_a_new_replica_is_ready_after_the_derived_cold_start_with_the_planned_kv_blocks():
    # 60 s of arrivals: the run outlasts the 49.5 s cold start (routers no longer park requests on
    # a starting replica while the ready one keeps up, so nothing else would keep the run going)
    res = replay_with(ScaleTo(2), trace=make_trace(120, qps=2, seed=1),
                      cluster={"models": [{**ANCHOR, "latency": {}, "model_spec": LLAMA70, "replicas": 1}]})
    ready = {e.worker_id: e.time_s for e in res.events if isinstance(e, ev.WorkerChanged) and e.kind == "ready"}
    starting = {e.worker_id: e.time_s for e in res.events if isinstance(e, ev.WorkerChanged) and e.kind == "starting"}
    assert ready["default-0"] == 0.0
    expected = cold_start_s(LLAMA70, "fp16", 2)
    assert ready["default-1"] - starting["default-1"] == pytest.approx(expected)
    plans = [d for d in res.decisions if d.action == "memory_plan"]
    assert {d.payload["num_kv_blocks"] for d in plans} == {3328}


def test_a_request_slot_is_whole_blocks_rounded_up_and_the_plan_says_so():
    """Blocks of 48 do not divide a 4,096-token slot: 4,096 // 48 = 85 blocks held 4,080 tokens a slot (16 lost in
    each, silently). A slot is 86 blocks now (4,128 tokens), each slot's memory counted so, and the reason says it."""
    plan = plan_replica_memory(LLAMA70, "a100-80gb", tensor_parallel=2, block_size=48)
    # the anchor's 13 slots (3,328 blocks of 16), of 86 blocks each: 1,105 blocks (53,040 tokens) before
    assert (plan.blocks_per_slot, plan.num_kv_blocks, plan.max_kv_tokens) == (86, 13 * 86, 13 * 4128)
    p = _plan(kv_block_size=48)
    assert p.num_kv_blocks == plan.num_kv_blocks
    assert p.reason.endswith("; request slots of 4096 tokens rounded up to 86 whole blocks (4128 tokens)")
    assert "rounded" not in _plan().reason  # (16 divides 4,096: the anchor's 3,328 blocks as before)
    assert plan_replica_memory(LLAMA70, "a100-80gb", tensor_parallel=2).blocks_per_slot == 256


@pytest.mark.parametrize(("slot", "block"), [(8, 16), (4096, 8192)])
def test_a_request_slot_shorter_than_a_block_is_refused_as_such(slot, block):
    """It planned 0 blocks a slot, and every model 'did not fit': 'needs ~12.1 GiB per GPU, usable 72.0 GiB'."""
    with pytest.raises(ValueError, match=rf"^request_slot_tokens \({slot}\) is less than the KV block size "
                                         rf"\({block}\): "):
        plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100-80gb", block_size=block, request_slot_tokens=slot)
