"""Workers as Ray actors: the same `WorkerRuntime`, hosted on any node of a Ray cluster.

Ray places each actor (one GPU each when the cluster has GPUs; Ray sets its
``CUDA_VISIBLE_DEVICES``), restarts nothing by itself (the control plane decides about
replacements), and reports a dead actor as an exception on the next call. Idle actors are pinged
every ``health_interval_s`` so a node or actor lost between batches is noticed too.

Connects to ``address`` (``"auto"`` for a running cluster, ``ray://host:10001`` for a client) or,
when none is given and Ray is not initialised yet, starts a local instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controlplane.live.guardian_models import GuardianWorkerSettings
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.placement import WorkerSlots
from controlplane.live.pool import WorkerPool
from controlplane.live.worker_messages import (
    StepCommand,
    StepOutOfMemory,
    StepReply,
    WorkerLost,
    WorkerStartError,
    describe_error,
)
from controlplane.live.worker_runtime import WorkerRuntime, settings_from_payload, settings_payload

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """Ray, or a clear error saying how to get it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WorkerStartError("the ray pool needs Ray: pip install 'ray>=2.9'") from exc
    return ray


class RayWorkerActor:
    """The body of a worker actor (wrapped with ``ray.remote`` by the pool)."""

    def __init__(self, settings: tuple[str, dict[str, Any]], threads: int | None) -> None:
        self._settings = settings_from_payload(settings)
        self._threads = threads
        self._runtime: WorkerRuntime | None = None

    def start(self) -> dict[str, Any]:
        self._runtime = WorkerRuntime.create(self._settings, self._threads)
        facts = self._runtime.facts()
        facts["node_ip"] = _node_ip()
        return facts

    def step(self, cmd: StepCommand) -> tuple[str, Any]:
        assert self._runtime is not None, "start() first"
        try:
            return ("reply", self._runtime.step(cmd))
        except StepOutOfMemory as exc:
            return ("oom", str(exc))

    def command(self, cmd: Any) -> Any:
        assert self._runtime is not None, "start() first"
        return self._runtime.command(cmd)

    def ping(self) -> int:
        return os.getpid()


def _node_ip() -> str | None:
    with contextlib.suppress(Exception):
        import ray

        return ray.util.get_node_ip_address()
    return None


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Keep the process's SIGTERM and SIGINT handlers: ``ray.init`` replaces SIGTERM's with one that
    exits at once, which would cut the daemon's drain short (the pool's ``close`` shuts Ray down)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread sets handlers (Ray's included)
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


@dataclass
class _RayWorker:
    actor: Any
    busy: int = 0  # calls in flight (a step and guardian checks may queue on one actor)
    dead: str | None = None
    pid: int | None = None
    device: str = "cpu"


class RayWorkerPool(WorkerPool):
    """One Ray actor per worker."""

    kind = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        cpu_threads: int | None = None,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float | None = None,
        init_kwargs: dict[str, Any] | None = None,
        health_interval_s: float = 2.0,
        start_timeout_s: float = 600.0,
        max_workers: int | None = None,
    ) -> None:
        super().__init__(cpu_threads=cpu_threads)
        self._slots = WorkerSlots(max_workers)
        self.address = address
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.init_kwargs = dict(init_kwargs or {})
        self.health_interval_s = health_interval_s
        self.start_timeout_s = start_timeout_s
        self._workers: dict[str, _RayWorker] = {}
        self._remote_cls: Any = None
        self._monitor: asyncio.Task | None = None
        self._started_ray = False

    def open(self) -> None:
        """Join the cluster at ``address`` (or start a local Ray) now: an address Ray cannot use (no
        cluster there, ``ray://`` without the ``ray[client]`` package) is one `WorkerStartError`."""
        self._ensure_ray()

    def _ensure_ray(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True, **self.init_kwargs}
            if self.address:
                kwargs["address"] = self.address
            try:
                with _signal_handlers_kept():
                    ray.init(**kwargs)
            except Exception as exc:  # ConnectionError (no cluster), ValueError (ray:// without ray[client])...
                what = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
                raise WorkerStartError(f"could not {what}: {_first_line(exc)}") from exc
            self._started_ray = True
        if self._remote_cls is None:
            self._remote_cls = ray.remote(RayWorkerActor)
        return ray

    def _gpus_for(self, ray: Any, settings: WorkerModelSettings | GuardianWorkerSettings) -> float:
        if self.num_gpus_per_worker is not None:
            return self.num_gpus_per_worker
        if settings.device not in ("auto", "cuda"):
            return 0
        return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0

    async def start(
        self, worker_id: str, settings: WorkerModelSettings | GuardianWorkerSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        if worker_id in self._workers:
            raise WorkerStartError(f"worker {worker_id} already exists")
        self._take_slot(self._slots, worker_id, settings)
        ray = self._ensure_ray()
        gpus = self._gpus_for(ray, settings)
        threads = None if gpus else self.threads_for(expected_workers)
        if gpus:
            device = "cuda:0" if settings.device == "auto" else settings.device
            settings = settings.model_copy(update={"device": device})
        actor = self._remote_cls.options(
            num_cpus=self.num_cpus_per_worker, num_gpus=gpus, max_restarts=0, max_concurrency=1
        ).remote(settings_payload(settings), threads)
        w = self._workers[worker_id] = _RayWorker(actor, device="cuda" if gpus else "cpu")
        try:
            facts = await asyncio.wait_for(_await_ref(actor.start.remote()), self.start_timeout_s)
        except Exception as exc:
            self._workers.pop(worker_id, None)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            raise WorkerStartError(f"ray actor for {worker_id} did not start: {describe_error(exc)}") from exc
        w.pid = facts.get("pid")
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
        return facts

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        kind, value = await self._call(worker_id, "step", cmd)
        if kind == "oom":
            raise StepOutOfMemory(value)
        return value

    async def command(self, worker_id: str, cmd: Any) -> Any:
        return await self._call(worker_id, "command", cmd)

    async def _call(self, worker_id: str, method: str, cmd: Any) -> Any:
        ray = import_ray()
        w = self._workers.get(worker_id)
        if w is None or w.dead:
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({w.dead})" if w and w.dead else ""))
        w.busy += 1
        try:
            return await _await_ref(getattr(w.actor, method).remote(cmd))
        except ray.exceptions.RayActorError as exc:
            self._lost(worker_id, w, f"ray actor died: {describe_error(exc)}")
            raise WorkerLost(w.dead) from None
        except Exception as exc:  # the call raised inside the actor: retire the worker
            log.error("worker %s %s failed: %s", worker_id, method, exc)
            self._lost(worker_id, w, f"worker {method} raised {describe_error(exc)}")
            with contextlib.suppress(Exception):
                ray.kill(w.actor, no_restart=True)
            raise WorkerLost(w.dead) from None
        finally:
            w.busy -= 1

    def _lost(self, worker_id: str, w: _RayWorker, reason: str) -> None:
        if w.dead is None:
            w.dead = reason
            self._report_failure(worker_id, reason)

    async def _watch(self) -> None:
        """Ping idle actors so a worker lost between batches is reported promptly."""
        ray = import_ray()
        while True:
            await asyncio.sleep(self.health_interval_s)
            for wid, w in list(self._workers.items()):
                if w.busy or w.dead:
                    continue
                try:
                    await asyncio.wait_for(_await_ref(w.actor.ping.remote()), max(5.0, self.health_interval_s * 5))
                except ray.exceptions.RayActorError as exc:
                    if self._workers.get(wid) is w:
                        self._lost(wid, w, f"ray actor died: {describe_error(exc)}")
                except TimeoutError:
                    log.warning("ray worker %s did not answer a ping", wid)
                except Exception as exc:  # pragma: no cover - defensive
                    log.warning("ray worker %s ping failed: %s", wid, exc)

    async def stop(self, worker_id: str) -> None:
        w = self._workers.pop(worker_id, None)
        if w is None:
            return
        w.dead = w.dead or "stopped"
        ray = import_ray()
        with contextlib.suppress(Exception):
            ray.kill(w.actor, no_restart=True)

    async def close(self) -> None:
        await super().close()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor
            self._monitor = None
        if self._started_ray:
            ray = import_ray()
            with contextlib.suppress(Exception):
                ray.shutdown()
            self._started_ray = False

    def alive(self, worker_id: str) -> bool:
        w = self._workers.get(worker_id)
        return w is not None and w.dead is None and w.pid is not None

    def info(self, worker_id: str) -> dict[str, Any]:
        w = self._workers.get(worker_id)
        return {"pid": w.pid, "device": w.device, "ray": True} if w else {}

    def kill(self, worker_id: str) -> None:
        """Kill a worker's actor (chaos testing); the pool reports it as failed."""
        w = self._workers.get(worker_id)
        if w is not None:
            import_ray().kill(w.actor, no_restart=True)

    def worker_ids(self) -> list[str]:
        return list(self._workers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else describe_error(exc)


async def _await_ref(ref: Any) -> Any:
    return await ref
