"""Worker pools: the same worker runtime in a thread and in a Ray actor, driven step by step.

(The process pool is exercised end to end, worker kills included, by ``test_daemon.py``.)
"""

from __future__ import annotations

import asyncio
import time

import pytest

from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.pool import WorkerPool, make_pool
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.live.worker_messages import AddSpec, StepCommand, WorkerLost
from controlplane.live.worker_runtime import is_out_of_memory
from controlplane.live.sampling import StopCondition

TINY = WorkerModelSettings(preset="tiny-llama")
NO_EOS = StopCondition(eos_token_ids=())


@pytest.fixture(scope="module")
def reference():
    """Greedy output of the backend run directly, one request at a time."""
    from controlplane.live.backend import CausalLMBackend

    backend = CausalLMBackend.from_settings(TINY)

    def generate(text: str, n: int) -> tuple[list[int], list[int]]:
        ids = backend.tokenizer(text)["input_ids"]
        out = backend.generate_one(ids, n, stop=NO_EOS)
        return ids, out.token_ids

    return generate


async def _generate(pool: WorkerPool, wid: str, rid: str, ids: list[int], n: int) -> list[int]:
    """One request through a worker: a prefill step, then decode steps until it finishes."""
    reply = await pool.step(wid, StepCommand(0, prefill_ids=(rid,), adds=(AddSpec(rid, tuple(ids), n, NO_EOS),)))
    assert reply.profile["padded_prefill_tokens"] == reply.profile["num_prefill_tokens"] == len(ids)
    tokens = [reply.outputs[0].token_id]
    step = 1
    while not reply.outputs[0].finished:
        reply = await pool.step(wid, StepCommand(step, decode_ids=(rid,)))
        assert reply.batch_id == step and reply.duration_s > 0
        assert reply.profile["padded_decode_context"] == reply.profile["sum_decode_context"]  # one sequence
        tokens.append(reply.outputs[0].token_id)
        step += 1
    assert reply.outputs[0].finish_reason == "length"
    return tokens


def test_thread_pool_runs_the_backend_and_reports_device_facts(reference):
    ids, expected = reference("pool test prompt", 6)
    failures: list[tuple[str, str]] = []

    async def main() -> None:
        pool = LocalThreadPool(cpu_threads=1)
        pool.bind(asyncio.get_running_loop(), lambda w, r: failures.append((w, r)))
        facts = await pool.start("w0", TINY)
        assert facts["device"] == "cpu" and facts["precision"] == "fp32"
        assert facts["compiled"] is False and facts["compile_mode"] is None  # (a profile's labels: calibrate)
        assert facts["vocab_size"] == 512 and facts["max_seq_len"] == 2048
        assert facts["kv_bytes_per_token"] == 2 * 4 * 2 * 64 * 4  # layers, kv heads, head dim, fp32
        assert facts["total_bytes"] >= facts["free_bytes"] > 0 and facts["model_bytes"] > 0
        # the device it runs on, as the process pool says it (/admin/workers read "auto", the setting, here)
        assert pool.info("w0")["device"] == facts["device"] == "cpu"
        assert pool.alive("w0") and pool.worker_ids() == ["w0"]
        assert await _generate(pool, "w0", "a", ids, 6) == expected
        # A request registered then removed before its prefill leaves nothing behind.
        await pool.step("w0", StepCommand(10, adds=(AddSpec("b", tuple(ids), 3, NO_EOS),), removes=()))
        reply = await pool.step("w0", StepCommand(11, removes=("b",)))
        assert reply.outputs == ()
        with pytest.raises(WorkerLost):  # a step that raises retires the worker
            await pool.step("w0", StepCommand(12, decode_ids=("never-added",)))
        assert failures and failures[0][0] == "w0" and "KeyError" in failures[0][1]
        assert not pool.alive("w0")
        await pool.close()
        assert pool.worker_ids() == []

    asyncio.run(main())


def test_out_of_memory_is_told_apart_from_other_errors():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(KeyError("not running: ['x']"))
    assert not is_out_of_memory(ValueError("a request cannot be prefilled and decoded in the same step"))


def test_unknown_pool_kind_is_an_error():
    with pytest.raises(ValueError, match="thread, process, ray"):
        make_pool("kubernetes")


def test_ray_pool_hosts_workers_as_actors(reference, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray) - the ray pool is untested")
    from controlplane.live.pool_ray import RayWorkerPool

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process; the test needs its own local instance")
    ids, expected = reference("ray actor prompt", 5)
    failures: list[tuple[str, str]] = []

    async def main() -> None:
        pool = RayWorkerPool(init_kwargs={"num_cpus": 2}, health_interval_s=0.3)
        pool.bind(asyncio.get_running_loop(), lambda w, r: failures.append((w, r)))
        try:
            facts = await pool.start("r0", TINY)
            assert facts["device"] == "cpu" and facts["node_ip"]
            assert pool.alive("r0") and pool.info("r0")["pid"] == facts["pid"]
            assert await _generate(pool, "r0", "a", ids, 5) == expected
            pool.kill("r0")  # an idle actor dies: the health check reports it
            deadline = time.monotonic() + 30
            while not failures and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert failures and failures[0][0] == "r0" and "died" in failures[0][1]
            with pytest.raises(WorkerLost):
                await pool.step("r0", StepCommand(99, decode_ids=("a",)))
        finally:
            await pool.close()
        assert not ray.is_initialized()

    asyncio.run(main())
