"""The process pool (the daemon's default): what it promises beyond the end-to-end runs of
``test_daemon.py``."""

from __future__ import annotations

import asyncio

from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.placement import NoFreeDevice
from controlplane.live.pool_process import ProcessPool

TINY = WorkerModelSettings(preset="tiny-llama")


def test_max_workers_holds_for_workers_started_at_once():
    """The daemon starts its initial workers concurrently: each must see the slots the others
    took, although their processes are still being spawned."""

    async def main() -> list:
        pool = ProcessPool(cpu_threads=1, gpus=0, max_workers=1)
        pool.bind(asyncio.get_running_loop(), lambda w, r: None)
        try:
            return await asyncio.gather(*(pool.start(w, TINY) for w in ("w0", "w1")), return_exceptions=True)
        finally:
            await pool.close()

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, NoFreeDevice)]
    assert len(refused) == 1 and "all 1 worker slots" in str(refused[0])
    assert sum(isinstance(r, dict) for r in results) == 1


def test_a_start_nobody_awaits_any_more_leaves_no_never_retrieved_error():
    """A shutdown cancelled a worker's start; its process then died: asyncio logged 'Future exception was never
    retrieved ... WorkerLost' as an ERROR at the daemon's close."""
    import gc

    from controlplane.live.pool_process import _retrieved

    async def main() -> list:
        loop = asyncio.get_running_loop()
        said: list = []
        loop.set_exception_handler(lambda _loop, context: said.append(context.get("message")))
        start = loop.create_future()
        start.add_done_callback(_retrieved)
        start.set_exception(RuntimeError("worker process was killed"))
        await asyncio.sleep(0)
        del start
        gc.collect()
        await asyncio.sleep(0)
        return said

    assert asyncio.run(main()) == []


class ProcessExit(Exception):
    """``os._exit`` in place of the real one: the worker body runs in the test's own process."""


def test_a_worker_told_to_stop_ends_its_process_at_once_without_the_interpreters_shutdown(monkeypatch):
    """An idle process-pool daemon took 5-11 s to exit after SIGTERM: its worker answered "stopped",
    then returned into Python's own shutdown with torch and a model loaded (3-10 s), and the
    daemon waited for the process to end. The worker now ends with ``os._exit`` right away."""
    import multiprocessing
    import os
    import signal

    from controlplane.live import pool_process
    from controlplane.live.worker_runtime import settings_payload

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise ProcessExit

    monkeypatch.setattr(os, "_exit", fake_exit)
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the worker ignores both
    parent, child = multiprocessing.Pipe()
    try:
        parent.send(("ping", 7))
        parent.send(("stop",))
        try:
            pool_process._process_main(child, settings_payload(TINY), {}, 1)
        except ProcessExit:
            pass
        got = [parent.recv() for _ in range(3)]
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        parent.close()
        child.close()
    assert [m[0] for m in got] == ["ready", "pong", "stopped"]
    assert exits == [0]  # ended there, not returned into the interpreter's shutdown


#: A process pool started and closed in a fresh interpreter (the resource tracker speaks at that one's exit):
#: one worker of the settings given as JSON in argv[1].
POOL_START_AND_CLOSE = """
import asyncio, json, sys
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.pool_process import ProcessPool

async def main():
    pool = ProcessPool(cpu_threads=1, gpus=0)
    pool.bind(asyncio.get_running_loop(), lambda w, r: None)
    try:
        facts = await pool.start("w0", WorkerModelSettings(**json.loads(sys.argv[1])))
        print("started", facts["model"])
    finally:
        await pool.close()

asyncio.run(main())
"""


def start_and_close_pool(settings: dict, timeout_s: float = 300) -> str:
    """Start one process-pool worker of ``settings`` in a fresh interpreter and close the pool: its stderr."""
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", POOL_START_AND_CLOSE, json.dumps(settings)], capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and "started" in done.stdout, done.stderr
    return done.stderr


def test_a_closed_worker_leaves_no_leaked_semaphore(tmp_path):
    """A worker process ends with os._exit (`_exit_now`): the multiprocessing lock tqdm makes for its first
    progress bar (transformers' "Loading weights" here; torch.compile's on a compile: true worker,
    test_compile.py) was never unlinked, and the daemon ended with "resource_tracker: There appear to be 1
    leaked semaphore objects to clean up at shutdown"."""
    from controlplane.live.model_source import build_config
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(build_config(WorkerModelSettings(preset="tiny-llama"))).save_pretrained(tmp_path)
    stderr = start_and_close_pool({"path": str(tmp_path), "device": "cpu", "max_seq_len": 64})
    assert "leaked semaphore" not in stderr, stderr
