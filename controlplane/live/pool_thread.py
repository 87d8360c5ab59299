"""Workers in threads of this process: the smallest footprint, no isolation (tests, notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.live.placement import GpuSlots, WorkerSlots
from controlplane.live.pool import WorkerPool
from controlplane.live.worker_messages import (
    StepCommand,
    StepOutOfMemory,
    StepReply,
    WorkerLost,
    WorkerStartError,
    describe_error,
)
from controlplane.live.worker_runtime import WorkerRuntime

if TYPE_CHECKING:
    from controlplane.live.guardian_models import GuardianWorkerSettings
    from controlplane.live.model_source import WorkerModelSettings

log = logging.getLogger(__name__)

__all__ = ["LocalThreadPool"]


@dataclass
class _ThreadWorker:
    executor: ThreadPoolExecutor
    device: str
    runtime: WorkerRuntime | None = None
    dead: str | None = None


class LocalThreadPool(WorkerPool):
    """Workers in threads of this process, one backend and one thread each (no isolation)."""

    kind = "thread"

    def __init__(self, *, cpu_threads: int | None = None, gpus: int | None = None,
                 max_workers: int | None = None) -> None:
        super().__init__(cpu_threads=cpu_threads)
        self._gpus = GpuSlots(gpus)
        self._slots = WorkerSlots(max_workers)
        self._workers: dict[str, _ThreadWorker] = {}

    async def start(
        self, worker_id: str, settings: WorkerModelSettings | GuardianWorkerSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        if worker_id in self._workers:
            raise WorkerStartError(f"worker {worker_id} already exists")
        self._take_slot(self._slots, worker_id, settings)
        threads: int | None = None
        if self._gpus.wants_gpu(settings):
            settings = settings.model_copy(update={"device": f"cuda:{self._gpus.take(worker_id)}"})
        else:
            threads = self.threads_for(expected_workers)
        ex = ThreadPoolExecutor(1, thread_name_prefix=f"cp-worker-{worker_id}")
        w = self._workers[worker_id] = _ThreadWorker(ex, settings.device)
        loop = asyncio.get_running_loop()
        try:
            w.runtime = await loop.run_in_executor(ex, WorkerRuntime.create, settings, threads)
            facts = await loop.run_in_executor(ex, w.runtime.facts)
        except Exception as exc:
            self._discard(worker_id)
            raise WorkerStartError(describe_error(exc)) from exc
        if facts.get("device"):  # the device "auto" resolved to (`info`: what /admin/workers shows, as other pools)
            w.device = str(facts["device"])
        return facts

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        return await self.command(worker_id, cmd)

    async def command(self, worker_id: str, cmd: Any) -> Any:
        w = self._workers.get(worker_id)
        if w is None or w.runtime is None or w.dead:
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({w.dead})" if w and w.dead else ""))
        try:
            return await asyncio.get_running_loop().run_in_executor(w.executor, w.runtime.command, cmd)
        except StepOutOfMemory:
            raise
        except Exception as exc:
            w.dead = f"worker thread raised {describe_error(exc)}"
            log.error("worker %s command failed:\n%s", worker_id, "".join(traceback.format_exception(exc)))
            self._report_failure(worker_id, w.dead)
            raise WorkerLost(w.dead) from exc

    async def stop(self, worker_id: str) -> None:
        w = self._workers.get(worker_id)
        if w is None:
            return
        w.dead = w.dead or "stopped"
        await asyncio.get_running_loop().run_in_executor(w.executor, lambda: None)  # let a running step end
        self._discard(worker_id)

    def _discard(self, worker_id: str) -> None:
        w = self._workers.pop(worker_id, None)
        self._gpus.release(worker_id)
        if w is None:
            return
        w.runtime = None
        w.executor.shutdown(wait=False)
        with contextlib.suppress(Exception):
            import torch

            if w.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def alive(self, worker_id: str) -> bool:
        w = self._workers.get(worker_id)
        return w is not None and w.runtime is not None and w.dead is None

    def info(self, worker_id: str) -> dict[str, Any]:
        w = self._workers.get(worker_id)
        return {"pid": os.getpid(), "device": w.device} if w else {}

    def worker_ids(self) -> list[str]:
        return list(self._workers)
