"""Where live workers run: threads, OS processes or Ray actors, one model backend each.

The live driver talks to every kind of worker through one small async interface, `WorkerPool`:
start a worker (load its model, report its device facts), run one iteration on it, send it any
other command (`WorkerPool.command`: guardian loads and checks), stop it.
Whatever hosts the worker, the worker side is the same `WorkerRuntime`
(`controlplane.live.worker_runtime`), and the messages are the same plain values
(`controlplane.live.worker_messages`). A worker that dies (its process is killed, its actor
dies, its thread raises) is reported through the pool's ``on_failure`` callback and every call
waiting on it raises `WorkerLost`; a step that runs out of memory raises `StepOutOfMemory`
instead, and the worker lives on.

The pools: `LocalThreadPool` (`pool_thread`), `ProcessPool` (`pool_process`), `RayWorkerPool`
(`pool_ray`); `make_pool` picks one by name. Placement (`controlplane.live.placement`): when CUDA
is present each worker gets one GPU of its own; otherwise workers run on the CPU with
``cpu_threads`` torch threads each.

Guardian workers (`controlplane.live.guardian_pool`) are workers of the same pools, started from
`GuardianWorkerSettings` instead of a model's settings; they take no slot of ``max_workers``
(which bounds generation workers: guardians are declared with their own ``replicas``).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controlplane.live.guardian_models import GuardianWorkerSettings
from controlplane.live.placement import default_cpu_threads
from controlplane.live.worker_messages import StepCommand, StepReply

if TYPE_CHECKING:
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.placement import WorkerSlots

log = logging.getLogger(__name__)

__all__ = ["POOL_KINDS", "WorkerPool", "make_pool"]

POOL_KINDS = ("thread", "process", "ray")


class WorkerPool(ABC):
    """Starts, steps and stops workers; reports the ones that die through ``on_failure``.

    All methods are called from the driver's event loop; ``on_failure(worker_id, reason)`` is
    always called on that loop too.
    """

    kind: str = ""

    def __init__(self, *, cpu_threads: int | None = None) -> None:
        self.cpu_threads = cpu_threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_failure: Callable[[str, str], None] | None = None
        self._guardian_workers: set[str] = set()
        #: Why the pool cannot host any worker any more (the Ray pool's cluster head is gone), else None
        self.broken: str | None = None
        #: Told ``broken``'s reason once, on the loop, when the pool breaks (the daemon closes its run and exits)
        self.on_broken: Callable[[str], None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, on_failure: Callable[[str, str], None]) -> None:
        self._loop = loop
        self._on_failure = on_failure

    def _report_failure(self, worker_id: str, reason: str) -> None:
        log.warning("worker %s failed: %s", worker_id, reason)
        if self._on_failure is not None:
            self._on_failure(worker_id, reason)

    def threads_for(self, expected_workers: int) -> int:
        return self.cpu_threads or default_cpu_threads(expected_workers)

    def _take_slot(self, slots: WorkerSlots, worker_id: str, settings: Any) -> None:
        """``max_workers`` counts generation workers; a guardian worker takes no slot."""
        if isinstance(settings, GuardianWorkerSettings):
            self._guardian_workers.add(worker_id)
            return
        slots.check(worker_id, sum(1 for w in self.worker_ids() if w not in self._guardian_workers))

    def open(self) -> None:
        """Check that the pool can host workers at all, before any is started (the Ray pool joins its
        cluster here). Raises `WorkerStartError` saying why not; a pool with nothing to check does nothing."""

    @abstractmethod
    async def start(
        self, worker_id: str, settings: WorkerModelSettings | GuardianWorkerSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        """Start a worker and load its model (a generation model, or a guardian's); returns its
        device facts. Raises `WorkerStartError`."""

    @abstractmethod
    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        """Run one iteration. Raises `WorkerLost` or `StepOutOfMemory`."""

    @abstractmethod
    async def command(self, worker_id: str, cmd: Any) -> Any:
        """Send the worker one command (`WorkerRuntime.command`: `LoadGuardian`, `GuardianCheck`,
        `StepCommand`) and return its answer. It runs after the commands already sent, one at a
        time; a command that raises retires the worker as a step does. Raises `WorkerLost`."""

    @abstractmethod
    async def stop(self, worker_id: str) -> None:
        """Stop a worker and free its device; stopping an unknown or dead worker is a no-op."""

    @abstractmethod
    def alive(self, worker_id: str) -> bool:
        """Whether the worker is started and has not died."""

    def info(self, worker_id: str) -> dict[str, Any]:
        """What an operator may want to know about a worker (pid, device)."""
        return {}

    async def close(self) -> None:
        """Stop every worker."""
        for wid in list(self.worker_ids()):
            await self.stop(wid)

    @abstractmethod
    def worker_ids(self) -> list[str]:
        """Workers started and not stopped (dead ones included until stopped)."""


def make_pool(kind: str, *, cpu_threads: int | None = None, **options: Any) -> WorkerPool:
    """A pool by name: ``thread``, ``process`` or ``ray`` (options go to its constructor)."""
    if kind == "thread":
        from controlplane.live.pool_thread import LocalThreadPool

        return LocalThreadPool(cpu_threads=cpu_threads, **options)
    if kind == "process":
        from controlplane.live.pool_process import ProcessPool

        return ProcessPool(cpu_threads=cpu_threads, **options)
    if kind == "ray":
        from controlplane.live.pool_ray import RayWorkerPool

        return RayWorkerPool(cpu_threads=cpu_threads, **options)
    raise ValueError(f"unknown pool {kind!r}; choose one of {', '.join(POOL_KINDS)}")
