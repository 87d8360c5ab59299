"""A short recorded live run whose iterations were timed (what ``controlplane calibrate`` reads).

Shared by test_calibration.py and test_bench_cli.py: each builds a module-scoped fixture on
`record_live_run`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


def record_live_run(directory: Path) -> tuple[str, int, list[Any]]:
    """(database URL, run id, the run's samples as an `IterationLog` saw them) of a tiny live run
    with ``storage.record_iterations`` on; 3 requests of 6 tokens, then 2 of 4."""
    import torch

    from controlplane.live.driver import LiveDriver
    from controlplane.live.iteration_log import IterationLog
    from controlplane.live.pool import make_pool
    from controlplane.testing import make_config

    url = f"sqlite:///{directory / 'live.db'}"
    cfg = make_config(storage={"url": url, "record_iterations": True}, cluster={"models": [
        {"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}]})

    async def main():
        log = IterationLog()
        driver = LiveDriver(cfg, pool=make_pool("thread", cpu_threads=1), extra_plugins=[log])
        await driver.start(wait_ready_s=120)
        try:
            first = [await driver.submit([5 + i] * (4 + 3 * i), max_tokens=6, ignore_eos=True) for i in range(3)]
            await asyncio.sleep(0.02)
            later = [await driver.submit([9] * 20, max_tokens=4, ignore_eos=True) for _ in range(2)]
            results = [await h.result() for h in first + later]
        finally:
            await driver.close()
        return driver.run_id, log.samples, results

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_id, samples, results = asyncio.run(main())
    finally:
        torch.set_num_threads(before)
    assert all(r.ok for r in results)
    return url, run_id, samples
