"""Workers as Ray actors: the same `WorkerRuntime`, hosted on any node of a Ray cluster.

Ray places each actor (one GPU each when the cluster has GPUs; Ray sets its
``CUDA_VISIBLE_DEVICES``), restarts nothing by itself (the control plane decides about
replacements), and reports a dead actor as an exception on the next call. Idle actors are pinged
every ``health_interval_s`` so a node or actor lost between batches is noticed too.

Connects to ``address`` (``"auto"`` for a running cluster, ``ray://host:10001`` for a client) or,
when none is given and Ray is not initialised yet, starts a local instance; an address with nothing
listening is refused at once (`ray_connect.check_reachable`: Ray itself retried for minutes).

No call that may wait for Ray's GCS (creating or killing an actor, reading the cluster's resources)
runs on the event loop: each runs in a thread. A start the cluster cannot place (its actor still
waits for resources after ``placement_timeout_s``, while the cluster has fewer free than it needs)
fails with `NoFreeDevice` naming what it needs and what is free. The health monitor also watches
the GCS: when the head is unreachable ``head_lost_after`` checks in a row, every worker is failed
with that reason and the pool's ``on_broken`` is told (the daemon then closes its run and exits 1,
before Ray's client ends the process about 60 s after losing the GCS). Ray's implicit
``ray.init()`` is turned off, and nothing calls Ray once it is shut down (`ray_connect.no_auto_init`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from controlplane.live.guardian_models import GuardianWorkerSettings
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.placement import NoFreeDevice, WorkerSlots
from controlplane.live.pool import WorkerPool
from controlplane.live.ray_connect import (
    CONNECT_TIMEOUT_S,
    check_reachable,
    gcs_address,
    gcs_reachable,
    host_port,
    no_auto_init,
)
from controlplane.live.worker_messages import (
    StepCommand,
    StepOutOfMemory,
    StepReply,
    WorkerLost,
    WorkerStartError,
    describe_error,
)
from controlplane.live.worker_runtime import WorkerRuntime, settings_from_payload, settings_payload
from controlplane.sigterm import handlers_kept

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """Ray, or a clear error saying how to get it."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # (read at Ray's import; `no_auto_init` where it is imported already)
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WorkerStartError("the ray pool needs Ray: pip install 'ray>=2.9'") from exc
    no_auto_init(ray)
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
        placement_timeout_s: float = 30.0,
        head_lost_after: int = 2,
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
        self.placement_timeout_s = placement_timeout_s
        self.head_lost_after = head_lost_after
        self._workers: dict[str, _RayWorker] = {}
        self._remote_cls: Any = None
        self._monitor: asyncio.Task | None = None
        self._started_ray = False
        self._closed = False
        self._gcs: tuple[str, int] | None = None  # the GCS the health monitor watches

    def open(self) -> None:
        """Join the cluster at ``address`` (or start a local Ray) now: an address Ray cannot use (no
        cluster there, ``ray://`` without the ``ray[client]`` package) is one `WorkerStartError`."""
        self._ensure_ray()

    def _ensure_ray(self) -> Any:
        if self.broken:
            raise WorkerStartError(self.broken)
        if self._closed:  # (Ray is shut down: a start now would start another local instance)
            raise WorkerStartError("the ray pool is closed")
        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True, **self.init_kwargs}
            if self.address:
                kwargs["address"] = self.address
            what = f"join the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
            try:
                check_reachable(self.address)  # (nothing listening there: Ray retried for minutes)
                with handlers_kept(signal.SIGTERM, signal.SIGINT):  # (Ray's SIGTERM handler exits at once)
                    ray.init(**kwargs)
            except Exception as exc:  # ConnectionError (no cluster), ValueError (ray:// without ray[client])...
                raise WorkerStartError(f"could not {what}: {_first_line(exc)}") from exc
            self._started_ray = True
        if self._gcs is None:  # (the GCS Ray connected to; a ray:// client's server)
            if (self.address or "").startswith("ray://"):
                self._gcs = gcs_address(self.address)
            else:
                with contextlib.suppress(Exception):
                    self._gcs = host_port(ray.get_runtime_context().gcs_address)
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
        if self._monitor is None:  # (from the first start on: a head lost while it loads is noticed too)
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
        w = self._workers[worker_id] = _RayWorker(None)  # (its slot is taken while the actor is made)
        try:
            # Each in a thread: they wait for the GCS (for about 60 s when the head is gone)
            gpus = await asyncio.to_thread(self._gpus_for, ray, settings)
            need = {"CPU": float(self.num_cpus_per_worker), "GPU": float(gpus)}
            await self._check_fits(ray, worker_id, need)
            threads = None if gpus else self.threads_for(expected_workers)
            if gpus:
                device = "cuda:0" if settings.device == "auto" else settings.device
                settings = settings.model_copy(update={"device": device})
            w.device = "cuda" if gpus else "cpu"
            w.actor = await asyncio.to_thread(self._create_actor, settings, threads, gpus)
            if w.dead:  # stopped (or its head lost) meanwhile
                raise WorkerLost(f"worker {worker_id} was {w.dead} while it started")
            await self._placed(ray, worker_id, w.actor, need)
            facts = await asyncio.wait_for(_await_ref(w.actor.start.remote()), self.start_timeout_s)
        except BaseException as exc:
            if self._workers.get(worker_id) is w:
                self._workers.pop(worker_id)
            w.dead = w.dead or "did not start"
            if w.actor is not None:
                await asyncio.shield(self._kill(w.actor))
            if isinstance(exc, (NoFreeDevice, asyncio.CancelledError)) or not isinstance(exc, Exception):
                raise
            raise WorkerStartError(f"ray actor for {worker_id} did not start: {describe_error(exc)}") from exc
        w.pid = facts.get("pid")
        return facts

    def _create_actor(self, settings: WorkerModelSettings | GuardianWorkerSettings, threads: int | None,
                      gpus: float) -> Any:
        return self._remote_cls.options(
            num_cpus=self.num_cpus_per_worker, num_gpus=gpus, max_restarts=0, max_concurrency=1
        ).remote(settings_payload(settings), threads)

    async def _check_fits(self, ray: Any, worker_id: str, need: dict[str, float]) -> None:
        """`NoFreeDevice` at once when the whole cluster has fewer CPUs or GPUs than one actor needs."""
        total = await asyncio.to_thread(ray.cluster_resources)
        short = _short(need, total)
        if short:
            raise NoFreeDevice(f"ray cannot place {worker_id}: it needs {_amounts(need, need)}, and the whole cluster has "
                               f"{_amounts(need, total)}")

    async def _placed(self, ray: Any, worker_id: str, actor: Any, need: dict[str, float]) -> None:
        """Wait until Ray has placed the actor (its cheap ``ping`` answers). Still unplaced after
        ``placement_timeout_s`` while the cluster has fewer free resources than it needs:
        `NoFreeDevice` (Ray would keep it pending for as long as nothing frees up)."""
        ping = asyncio.ensure_future(_await_ref(actor.ping.remote()))
        try:
            while True:
                done, _ = await asyncio.wait([ping], timeout=self.placement_timeout_s)
                if done:
                    ping.result()  # (an actor that died at its creation raises here)
                    return
                free = await asyncio.to_thread(ray.available_resources)
                if _short(need, free):
                    raise NoFreeDevice(f"ray could not place {worker_id} in {self.placement_timeout_s:g} s: it "
                                       f"needs {_amounts(need, need)}, and the cluster has {_amounts(need, free)} free")
                # Resources are free: the actor is being created (a worker process starting), wait on
        finally:
            if not ping.done():
                ping.cancel()

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
        if w is None or w.dead or w.actor is None or not ray.is_initialized():
            why = w.dead if w and w.dead else None
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({why})" if why else ""))
        w.busy += 1
        try:
            return await _await_ref(getattr(w.actor, method).remote(cmd))
        except ray.exceptions.RayActorError as exc:
            self._lost(worker_id, w, f"ray actor died: {describe_error(exc)}")
            raise WorkerLost(w.dead) from None
        except Exception as exc:  # the call raised inside the actor: retire the worker
            log.error("worker %s %s failed: %s", worker_id, method, exc)
            self._lost(worker_id, w, f"worker {method} raised {describe_error(exc)}")
            await self._kill(w.actor)
            raise WorkerLost(w.dead) from None
        finally:
            w.busy -= 1

    def _lost(self, worker_id: str, w: _RayWorker, reason: str) -> None:
        if w.dead is None:
            w.dead = reason
            self._report_failure(worker_id, reason)

    async def _watch(self) -> None:
        """Ping idle actors so a worker lost between batches is reported promptly; and watch the GCS
        (`_head_lost`), apart: a ping may wait long while the head is gone."""
        await asyncio.gather(self._watch_head(), self._watch_actors())

    async def _watch_head(self) -> None:
        unreachable = 0
        while self._gcs is not None and not self._closed and not self.broken:
            await asyncio.sleep(self.health_interval_s)
            timeout = min(CONNECT_TIMEOUT_S, max(1.0, self.health_interval_s))
            if await asyncio.to_thread(gcs_reachable, self._gcs, timeout):
                unreachable = 0
                continue
            unreachable += 1
            if unreachable >= self.head_lost_after and not self._closed:
                host, port = self._gcs
                self._head_lost(f"the Ray head is gone: its GCS at {host}:{port} does not answer")

    async def _watch_actors(self) -> None:
        ray = import_ray()
        while not self._closed and not self.broken:
            await asyncio.sleep(self.health_interval_s)
            for wid, w in list(self._workers.items()):
                if w.busy or w.dead or w.actor is None or w.pid is None or self.broken:
                    continue  # (one starting answers its ping only once loaded)
                try:
                    await asyncio.wait_for(_await_ref(w.actor.ping.remote()), max(5.0, self.health_interval_s * 5))
                except ray.exceptions.RayActorError as exc:
                    if self._workers.get(wid) is w:
                        self._lost(wid, w, f"ray actor died: {describe_error(exc)}")
                except TimeoutError:
                    if not self.broken:
                        log.warning("ray worker %s did not answer a ping", wid)
                except Exception as exc:  # pragma: no cover - defensive
                    log.warning("ray worker %s ping failed: %s", wid, exc)

    def _head_lost(self, reason: str) -> None:
        """The cluster is gone: no Ray call is made any more (each would wait for the GCS, and Ray's
        client ends the process about 60 s after losing it); every worker fails with ``reason``."""
        log.error("%s: every ray worker is lost", reason)
        self.broken = reason
        for wid, w in list(self._workers.items()):
            self._lost(wid, w, reason)
        if self.on_broken is not None:
            self.on_broken(reason)

    async def _kill(self, actor: Any) -> None:
        """Kill an actor, in a thread (it waits for the GCS); nothing once Ray is shut down or its head gone."""
        ray = import_ray()
        if self.broken or not ray.is_initialized():
            return
        with contextlib.suppress(Exception):
            await asyncio.to_thread(ray.kill, actor, no_restart=True)

    async def stop(self, worker_id: str) -> None:
        w = self._workers.pop(worker_id, None)
        if w is None:
            return
        w.dead = w.dead or "stopped"
        if w.actor is not None:
            await self._kill(w.actor)

    async def close(self) -> None:
        await super().close()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor
            self._monitor = None
        self._closed = True  # (a start still running finds Ray shut down: it calls Ray no more)
        if self._started_ray and not self.broken:  # (with the head gone, a shutdown waits for it)
            ray = import_ray()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(ray.shutdown)
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
        ray = import_ray()
        if w is not None and w.actor is not None and ray.is_initialized() and not self.broken:
            ray.kill(w.actor, no_restart=True)

    def worker_ids(self) -> list[str]:
        return list(self._workers)


def _short(need: dict[str, float], have: dict[str, float]) -> str:
    """What of ``need`` ``have`` lacks ("1 GPU"), or ""."""
    return ", ".join(f"{_n(v)} {k}" for k, v in need.items() if v > 0 and have.get(k, 0.0) < v)


def _amounts(need: dict[str, float], have: dict[str, float]) -> str:
    return ", ".join(f"{_n(have.get(k, 0.0))} {k}" for k, v in need.items() if v > 0)


def _n(x: float) -> str:
    return f"{x:g}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else describe_error(exc)


async def _await_ref(ref: Any) -> Any:
    return await ref
