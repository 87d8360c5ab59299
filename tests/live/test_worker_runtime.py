"""The worker runtime steadies its process's allocator before the model loads (glibc only)."""

from __future__ import annotations

import ctypes.util
import json
import os
import platform
import subprocess
import sys

import pytest

from controlplane.live import worker_runtime as wr
from controlplane.live.model_source import WorkerModelSettings

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: In a fresh process: steady (or not) the allocator, malloc 16 MiB, and say where it came from.
_PROBE = """
import ctypes, ctypes.util, json, sys
from controlplane.live.worker_runtime import steady_allocator
class M(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = M
libc.malloc.restype = ctypes.c_void_p
set_ = steady_allocator()
before = libc.mallinfo2()
p = libc.malloc(16 << 20)
after = libc.mallinfo2()
print(json.dumps({"set": set_, "mapped": after.hblkhd - before.hblkhd, "heap": after.arena - before.arena}))
"""


def _probe(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, **env}, cwd=os.getcwd())
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC or not ctypes.util.find_library("c"), reason="glibc's mallopt and mallinfo2 only")
def test_a_steadied_process_serves_large_blocks_from_its_heap_not_fresh_mappings():
    steady = _probe()
    assert steady["set"] is True
    assert steady["mapped"] == 0 and steady["heap"] >= 15 << 20  # below the 32 MiB threshold: from the heap
    default = _probe(**{wr.MALLOC_ENV: "default"})
    assert default["set"] is False
    assert default["mapped"] >= 16 << 20  # glibc's default: a block this large is a mapping of its own


def test_the_runtime_steadies_the_allocator_before_the_model_loads(monkeypatch):
    order = []
    monkeypatch.setattr(wr, "steady_allocator", lambda: order.append("allocator") or True)
    from controlplane.live import backend

    real = backend.CausalLMBackend.from_settings
    monkeypatch.setattr(backend.CausalLMBackend, "from_settings",
                        classmethod(lambda cls, s, **kw: order.append("model") or real(s, **kw)))
    runtime = wr.WorkerRuntime.create(WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=64), 1)
    assert order == ["allocator", "model"] and runtime.backend is not None


def _compiled_settings(**kw) -> WorkerModelSettings:
    return WorkerModelSettings(preset="tiny-llama", device="cpu", precision="fp32", max_seq_len=256, compile=True,
                               compile_mode="default", **kw)


def test_a_compiled_worker_warms_up_before_it_reports_ready(monkeypatch):
    """A compiled worker said ready before it compiled anything: its first request then compiled for
    minutes (150 s for a 4-token request), and its first batch again. It now runs the shapes it
    meets first (one request, then two batched) before it returns its facts, which are its "ready".
    (Dynamo is switched off here, torch's own switch: the same path runs, eagerly, in a second.)"""
    import asyncio

    import torch._dynamo.config

    from controlplane.live.pool_thread import LocalThreadPool

    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    runtime = wr.WorkerRuntime.create(_compiled_settings(), threads=1)
    assert runtime.backend.loaded.compiled
    assert runtime.warm_up["batch_sizes"] == [1, 2]
    assert runtime.warm_up["steps"] == 2 * wr.WARM_UP_TOKENS  # each group: a prefill, then its decodes
    engine = runtime.backend
    assert engine.num_waiting == engine.num_running == 0 and engine.kv_bytes_allocated == 0  # left empty
    assert runtime.facts()["warm_up"] == runtime.warm_up

    async def ready_facts(settings) -> dict:
        pool = LocalThreadPool(cpu_threads=1)
        pool.bind(asyncio.get_running_loop(), lambda w, r: None)
        try:
            return await pool.start("w0", settings)
        finally:
            await pool.close()

    assert asyncio.run(ready_facts(_compiled_settings()))["warm_up"]["steps"] == 2 * wr.WARM_UP_TOKENS
    eager = asyncio.run(ready_facts(WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=256)))
    assert "warm_up" not in eager  # an eager worker has nothing to compile


def test_the_warm_up_fits_a_one_request_engine_and_a_short_context(engine):
    from controlplane.live.backend import CausalLMBackend

    single = CausalLMBackend(engine.loaded, max_batch_size=1, max_seq_len=6)
    assert wr.warm_up(single)["batch_sizes"] == [1]
    assert single.num_running == single.num_waiting == 0
