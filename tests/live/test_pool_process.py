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
