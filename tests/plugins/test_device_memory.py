"""device-memory: worker limits from the memory a live worker measured on its device."""

from __future__ import annotations

import pytest

from controlplane import events as ev
from controlplane.actions import StartBatch
from controlplane.session import RunSession
from controlplane.testing import EventLog, make_config, make_context, make_trace, make_worker, replay_with
from controlplane.types import Request
from plugins.device_memory import DeviceMemory

GIB = 2**30
KIB = 1024
CUDA_FACTS = {
    "device": "cuda:0",
    "model": "tiny",
    "precision": "bf16",
    "kv_bytes_per_token": 128 * KIB,
    "max_seq_len": 4096,
    "total_bytes": 80 * GIB,
    "free_bytes": 40 * GIB,
    "allocated_bytes": 1 * GIB,
    "reserved_bytes": 3 * GIB,  # 2 GiB cached by torch, unused
    "peak_allocated_bytes": 1 * GIB,
}
CPU_FACTS = {**CUDA_FACTS, "device": "cpu", "free_bytes": 16 * GIB, "allocated_bytes": 0, "reserved_bytes": 0}


def _ready(plugin: DeviceMemory, wid: str, facts: dict) -> None:
    plugin.cp_on_event(ev.WorkerChanged(0.0, wid, "ready", facts))


def _plan(facts: dict | None, *, settings: dict | None = None, trigger: str = "ready", deployment: dict | None = None,
          workers=None, **worker_fields):
    plugin = DeviceMemory(DeviceMemory.Settings(**(settings or {})))
    worker = make_worker(**worker_fields)
    if facts is not None:
        _ready(plugin, worker.worker_id, facts)
    config = make_config(cluster={"models": [{"name": "default", **(deployment or {})}]})
    ctx = make_context(config=config, workers=[worker, *(workers or [])])
    return plugin.cp_plan_memory(ctx=ctx, worker=worker, trigger=trigger)


def test_cuda_budget_is_free_plus_torch_cache_times_safety_over_kv_bytes_per_token():
    plan = _plan(CUDA_FACTS, deployment={"max_model_len": 4096, "max_num_seqs": 1000, "max_batch_tokens": 8192})
    tokens = int(42 * GIB * 0.8) // (128 * KIB)
    assert plan.num_kv_blocks == tokens // 16 and plan.kv_block_size == 16
    assert plan.max_num_seqs == tokens // 4096  # the budget over the average sequence length
    assert plan.max_batch_tokens == 8192  # capped by the configured token budget
    assert "cuda:0: 40.00 GiB free + 2.00 GiB cached by torch" in plan.reason
    assert f"{tokens // 16:,} blocks of 16 = {tokens // 16 * 16:,} tokens" in plan.reason


def test_batch_size_is_capped_by_the_configuration_unless_told_otherwise():
    d = {"max_model_len": 512, "max_num_seqs": 64}
    assert _plan(CUDA_FACTS, deployment=d).max_num_seqs == 64
    assert "configured cap" in _plan(CUDA_FACTS, deployment=d).reason
    free = _plan(CUDA_FACTS, deployment=d, settings={"cap_to_config": False})
    assert free.max_num_seqs == int(42 * GIB * 0.8) // (128 * KIB) // 512
    assert _plan(CUDA_FACTS, deployment=d, settings={"avg_seq_len": 1 << 20, "cap_to_config": False}).max_num_seqs == 1


def test_a_smaller_safety_margin_means_fewer_blocks():
    assert _plan(CUDA_FACTS, settings={"safety": 0.5}).num_kv_blocks < _plan(CUDA_FACTS).num_kv_blocks


def test_cpu_workers_share_a_fraction_of_the_host_memory():
    one = _plan(CPU_FACTS, settings={"host_memory_fraction": 0.5})
    assert one.num_kv_blocks == int(16 * GIB * 0.5 * 0.8) // (128 * KIB) // 16
    assert "16.00 GiB host memory available" in one.reason
    two = _plan(CPU_FACTS, settings={"host_memory_fraction": 0.5}, workers=[make_worker("default-1")])
    assert two.num_kv_blocks == pytest.approx(one.num_kv_blocks / 2, abs=1)
    assert "shared by 2 CPU workers" in two.reason


def test_a_tight_plan_is_whole_blocks_its_iterations_fit_the_cache_and_it_says_what_cannot_be_served(caplog):
    """host_memory_fraction 0.0001: the reason said "56 tokens = 3 blocks of 16" (which hold 48), max_batch_tokens
    56 > the KV cache's tokens, the share "0%", and nothing said that a 1024-token request could never be served."""
    per_token = 4 * KIB
    free = int(60 * per_token / 0.8 / 0.0001)  # 60 tokens' worth: 3 whole blocks of 16
    facts = {**CPU_FACTS, "kv_bytes_per_token": per_token, "free_bytes": free, "max_seq_len": 1024}
    with caplog.at_level("WARNING"):
        plan = _plan(facts, settings={"host_memory_fraction": 0.0001},
                     deployment={"max_model_len": 1024, "max_num_seqs": 64, "max_batch_tokens": 8192})
    assert (plan.num_kv_blocks, plan.kv_block_size, plan.max_batch_tokens, plan.max_num_seqs) == (3, 16, 48, 1)
    assert "2.86 GiB host memory available, 0.01% shared by 1 CPU worker; 80% of 0.293 MiB" in plan.reason
    assert "= 3 blocks of 16 = 48 tokens;" in plan.reason and "48 tokens per iteration" in plan.reason
    assert ("cannot hold one max_model_len sequence (1,024 tokens): a request of more than 48 tokens "
            "(prompt + max_tokens) is refused (does_not_fit)") in plan.reason
    assert "model default on cpu: the KV cache cannot hold one max_model_len sequence" in caplog.text
    roomy = _plan(CPU_FACTS, deployment={"max_model_len": 1024})
    assert "cannot hold" not in roomy.reason and "50% shared by 1 CPU worker" in roomy.reason


def test_out_of_memory_halves_the_batch_never_below_one():
    plan = _plan(CUDA_FACTS, trigger="out_of_memory", max_num_seqs=64, max_batch_tokens=4096, num_kv_blocks=100)
    assert (plan.max_num_seqs, plan.max_batch_tokens, plan.num_kv_blocks) == (32, 2048, 100)
    assert "out of memory" in plan.reason and "64 to 32" in plan.reason
    tiny = _plan(CUDA_FACTS, trigger="out_of_memory", max_num_seqs=1, max_batch_tokens=1)
    assert (tiny.max_num_seqs, tiny.max_batch_tokens) == (1, 1)


def test_not_even_one_block_is_reported_not_planned_as_zero():
    plan = _plan({**CUDA_FACTS, "free_bytes": 1 * KIB, "reserved_bytes": 0, "allocated_bytes": 0})
    assert plan.num_kv_blocks == 1 and plan.max_num_seqs == 1
    assert plan.reason.startswith("not even one KV block fits")


def test_without_device_facts_it_defers():
    assert _plan(None) is None
    assert _plan(None, trigger="out_of_memory") is None
    plugin = DeviceMemory()
    _ready(plugin, "default-0", CUDA_FACTS)
    plugin.cp_on_event(ev.WorkerChanged(1.0, "default-0", "failed", {"reason": "x"}))
    w = make_worker()
    assert plugin.cp_plan_memory(ctx=make_context(workers=[w]), worker=w, trigger="ready") is None


def test_in_the_simulator_static_memory_decides():
    enabled = ["device-memory", "static-memory", "continuous-batching", "builtin-latency-models"]
    res = replay_with(trace=make_trace(5, seed=3), plugins={"enabled": enabled})
    plans = [d for d in res.decisions if d.action == "memory_plan"]
    assert plans and {d.plugin for d in plans} == {"static-memory"}
    assert res.summary["num_completed"] == 5


def test_through_the_core_the_plan_and_the_out_of_memory_shrink_are_recorded_decisions():
    cfg = make_config(
        plugins={"enabled": ["device-memory", "continuous-batching"]},
        cluster={"models": [{"name": "default", "replicas": 1, "max_num_seqs": 1000, "max_model_len": 4096}]},
    )
    log = EventLog()
    with RunSession(cfg, mode="live", record=False, extra_plugins=[log]) as session:
        core = session.core
        (start,) = core.start()
        core.handle(ev.WorkerReady(0.1, start.worker_id, memory=CUDA_FACTS))
        w = core.workers[start.worker_id]
        ready_plan = [d for d in log.decisions if d.action == "memory_plan"][-1]
        assert ready_plan.plugin == "device-memory" and ready_plan.payload["trigger"] == "ready"
        assert w.num_kv_blocks == ready_plan.payload["num_kv_blocks"] == int(42 * GIB * 0.8) // (128 * KIB) // 16
        seqs = w.max_num_seqs
        (batch,) = [a for a in core.handle(ev.RequestArrived(0.2, Request("r0", 0.2, 8, 4))) if isinstance(a, StartBatch)]
        core.handle(ev.BatchFailed(0.3, w.worker_id, batch.batch.batch_id, "out of memory: CUDA", out_of_memory=True))
        oom = [d for d in log.decisions if d.action == "memory_plan"][-1]
        assert oom.plugin == "device-memory" and oom.payload["trigger"] == "out_of_memory"
        assert w.max_num_seqs == seqs // 2 and "halved" in oom.reason
        session.close(core.finish())


def test_real_worker_facts_from_a_tiny_model():
    pytest.importorskip("torch")
    from controlplane.live.backend import CausalLMBackend
    from controlplane.hardware.kv import kv_bytes_per_token
    from controlplane.live.model_source import WorkerModelSettings, build_config
    from controlplane.live.device_facts import device_facts

    settings = WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=256)
    facts = device_facts(CausalLMBackend.from_settings(settings), settings, 1)
    expected = kv_bytes_per_token(build_config(settings), 4)
    assert facts["kv_bytes_per_token"] == expected  # fp32 KV: 4 layers x 2 x 2 heads x 64 x 4 B
    deployment = {"name": "default", "worker": {"preset": "tiny-llama"}}
    plan = _plan(facts, deployment=deployment)
    assert plan.num_kv_blocks > 1 and plan.reason.startswith("cpu:")
    # Facts without the per-token size: the plugin defers (it reads no model config itself).
    no_size = {k: v for k, v in facts.items() if k != "kv_bytes_per_token"}
    assert _plan(no_size, deployment=deployment) is None
