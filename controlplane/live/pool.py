"""Where live workers run: threads, OS processes or Ray actors, one model backend each.

The live driver talks to every kind of worker through one small async interface, `WorkerPool`:
start a worker (load its model, report its device facts), run one iteration on it, stop it.
Whatever hosts the worker, the worker side is the same `WorkerRuntime`: it registers requests
with the `CausalLMBackend` lazily, drops preempted ones, runs ``backend.step`` and returns a
plain, picklable `StepReply`. A worker that dies (its process is killed, its actor dies, its
thread raises) is reported through the pool's ``on_failure`` callback and every call waiting on
it raises `WorkerLost`; a step that runs out of memory raises `StepOutOfMemory` instead, and the
worker lives on.

Placement: when CUDA is present each worker gets one GPU of its own (a process or actor sees it
as ``CUDA_VISIBLE_DEVICES``; a thread gets ``cuda:N``); otherwise workers run on the CPU with
``cpu_threads`` torch threads each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported lazily: a worker process sets CUDA_VISIBLE_DEVICES first
    from controlplane.live.model_source import WorkerModelSettings
    from controlplane.live.sampling import SamplingParams, StopCondition

log = logging.getLogger(__name__)

__all__ = [
    "AddSpec",
    "LocalThreadPool",
    "POOL_KINDS",
    "ProcessPool",
    "StepCommand",
    "StepOutOfMemory",
    "StepReply",
    "TokenOut",
    "WorkerLost",
    "WorkerPool",
    "WorkerRuntime",
    "WorkerStartError",
    "make_pool",
]

POOL_KINDS = ("thread", "process", "ray")


# --- messages between the driver and a worker ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddSpec:
    """Register a request with the worker's backend before the step that prefills it."""

    request_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int  # the request's whole budget, ``generated`` included
    stop: StopCondition | None = None
    sampling: SamplingParams | None = None
    # Output already streamed to the client: set when a request is computed again after a
    # preemption or on another worker after a failure. It is prefilled with the prompt, and the
    # request's stream resumes exactly where the client's left off.
    generated: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StepCommand:
    """One iteration on one worker: drop ``removes``, register ``adds``, then step."""

    batch_id: int
    prefill_ids: tuple[str, ...] = ()
    decode_ids: tuple[str, ...] = ()
    adds: tuple[AddSpec, ...] = ()
    removes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenOut:
    """What one request produced in one iteration."""

    request_id: str
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None  # "eos" | "stop" | "length" once finished


@dataclass(frozen=True, slots=True)
class StepReply:
    batch_id: int
    outputs: tuple[TokenOut, ...]
    duration_s: float  # the backend's measured iteration time
    profile: dict[str, float | int] = field(default_factory=dict)  # the profiler's row format


class WorkerLost(RuntimeError):
    """The worker is gone (process or actor died, thread raised); its work is lost."""


class StepOutOfMemory(RuntimeError):
    """The iteration ran out of device memory; the worker is still usable."""


class WorkerStartError(RuntimeError):
    """The worker could not start (bad model source, precision unavailable, no free GPU...)."""


# --- the worker side, the same in every pool ------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA OOM and for CPU allocation failures."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - old torch
        pass
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text
    )


class WorkerRuntime:
    """One model backend and the bookkeeping a driver needs around it (lives in the worker)."""

    def __init__(self, backend: Any, settings: WorkerModelSettings, threads: int | None) -> None:
        self.backend = backend
        self.settings = settings
        self.threads = threads

    @classmethod
    def create(cls, settings: WorkerModelSettings, threads: int | None = None) -> WorkerRuntime:
        import torch

        from controlplane.live.backend import CausalLMBackend

        if threads:
            torch.set_num_threads(threads)
        return cls(CausalLMBackend.from_settings(settings), settings, threads)

    def step(self, cmd: StepCommand) -> StepReply:
        b = self.backend
        for rid in cmd.removes:
            b.remove(rid)
        for a in cmd.adds:
            if b.has_request(a.request_id):
                b.remove(a.request_id)
            b.add_request(
                a.request_id, a.prompt_ids + a.generated, max_new_tokens=max(1, a.max_new_tokens - len(a.generated)),
                stop=a.stop, sampling=a.sampling,
            )
            if a.generated:
                self._resume_stream(a)
        try:
            res = b.step(cmd.prefill_ids, cmd.decode_ids)
        except BaseException as exc:
            if is_out_of_memory(exc):
                self._free_cache()
                raise StepOutOfMemory(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            raise
        outputs = tuple(
            TokenOut(o.request_id, o.token_id, o.text_delta, o.finished, o.finish_reason) for o in res.outputs
        )
        return StepReply(cmd.batch_id, outputs, res.duration_s, res.profile_row())

    def _resume_stream(self, a: AddSpec) -> None:
        """Give a recomputed request the output stream it had: the original prompt, then ``generated``.

        The backend would otherwise start a fresh stream that takes the already generated tokens
        for prompt, losing text held back at the cut (half a UTF-8 character, the start of a
        stop string) and counting the budget from the cut. ``CausalLMBackend`` has no public
        way to resume a request yet, so this reaches into its request record.
        """
        from controlplane.live.sampling import StopCondition
        from controlplane.live.streaming import OutputStream

        b = self.backend
        record = getattr(b, "_waiting", {}).get(a.request_id)
        if record is None or not hasattr(record, "stream"):
            log.warning("cannot resume the output stream of %s: backend internals changed", a.request_id)
            return
        stop = a.stop or StopCondition()
        eos = b.eos_token_ids if stop.eos_token_ids is None else stop.eos_token_ids
        budget = min(a.max_new_tokens, stop.max_new_tokens or a.max_new_tokens, b.max_seq_len - len(a.prompt_ids))
        stream = OutputStream(b.tokenizer, a.prompt_ids, stop, eos, budget)
        for token in a.generated:
            stream.append(token)
        record.stream = stream

    def facts(self) -> dict[str, Any]:
        """Device and model facts for the memory plan (`WorkerReady.memory`)."""
        return device_facts(self.backend, self.settings, self.threads)

    def _free_cache(self) -> None:
        import torch

        if self.backend.device.type == "cuda":
            torch.cuda.empty_cache()


def device_facts(backend: Any, settings: WorkerModelSettings, threads: int | None) -> dict[str, Any]:
    """Real memory facts of the worker's device, plus what the model needs per token of KV cache."""
    import torch

    from controlplane.live.memory import device_memory, kv_bytes_per_token

    dev = backend.device
    elem = torch.tensor([], dtype=backend.loaded.dtype).element_size()
    mem = device_memory(dev)
    facts: dict[str, Any] = {
        "device": str(dev),
        "model": settings.source_name(),
        "precision": backend.loaded.precision,
        "model_bytes": int(backend.loaded.model_bytes),
        "kv_bytes_per_token": kv_bytes_per_token(backend.config, elem),
        "max_seq_len": int(backend.max_seq_len),
        "vocab_size": int(backend.vocab_size),
        "total_bytes": mem.total_bytes,
        "free_bytes": mem.free_bytes,
        "allocated_bytes": mem.allocated_bytes,
        "reserved_bytes": mem.reserved_bytes,
        "peak_allocated_bytes": mem.peak_allocated_bytes,
        "pid": os.getpid(),
    }
    if dev.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(dev)
        facts["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    else:
        facts["device_name"] = "cpu"
        facts["torch_threads"] = int(threads or torch.get_num_threads())
    return facts


# --- placement ------------------------------------------------------------------------------------


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - broken CUDA install
        return 0


def default_cpu_threads(num_workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


class _GpuSlots:
    """Hands out one GPU per worker; workers that asked for the CPU get none."""

    def __init__(self, count: int | None = None) -> None:
        self.count = cuda_device_count() if count is None else count
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.physical = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
        self.owner: dict[int, str] = {}

    def wants_gpu(self, settings: WorkerModelSettings) -> bool:
        return self.count > 0 and settings.device in ("auto", "cuda")

    def take(self, worker_id: str) -> int:
        for i in range(self.count):
            if i not in self.owner:
                self.owner[i] = worker_id
                return i
        raise WorkerStartError(f"no free GPU for {worker_id}: all {self.count} are in use (one replica per GPU)")

    def release(self, worker_id: str) -> None:
        for i, owner in list(self.owner.items()):
            if owner == worker_id:
                del self.owner[i]

    def visible_name(self, index: int) -> str:
        return self.physical[index] if self.physical and index < len(self.physical) else str(index)


# --- the interface --------------------------------------------------------------------------------


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

    def bind(self, loop: asyncio.AbstractEventLoop, on_failure: Callable[[str, str], None]) -> None:
        self._loop = loop
        self._on_failure = on_failure

    def _report_failure(self, worker_id: str, reason: str) -> None:
        log.warning("worker %s failed: %s", worker_id, reason)
        if self._on_failure is not None:
            self._on_failure(worker_id, reason)

    def threads_for(self, expected_workers: int) -> int:
        return self.cpu_threads or default_cpu_threads(expected_workers)

    @abstractmethod
    async def start(
        self, worker_id: str, settings: WorkerModelSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        """Start a worker and load its model; returns its device facts. Raises `WorkerStartError`."""

    @abstractmethod
    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        """Run one iteration. Raises `WorkerLost` or `StepOutOfMemory`."""

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


def _describe(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- threads --------------------------------------------------------------------------------------


@dataclass
class _ThreadWorker:
    executor: ThreadPoolExecutor
    device: str
    runtime: WorkerRuntime | None = None
    dead: str | None = None


class LocalThreadPool(WorkerPool):
    """Workers in threads of this process, one backend and one thread each (no isolation)."""

    kind = "thread"

    def __init__(self, *, cpu_threads: int | None = None, gpus: int | None = None) -> None:
        super().__init__(cpu_threads=cpu_threads)
        self._gpus = _GpuSlots(gpus)
        self._workers: dict[str, _ThreadWorker] = {}

    async def start(
        self, worker_id: str, settings: WorkerModelSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        if worker_id in self._workers:
            raise WorkerStartError(f"worker {worker_id} already exists")
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
            return await loop.run_in_executor(ex, w.runtime.facts)
        except Exception as exc:
            self._discard(worker_id)
            raise WorkerStartError(_describe(exc)) from exc

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        w = self._workers.get(worker_id)
        if w is None or w.runtime is None or w.dead:
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({w.dead})" if w and w.dead else ""))
        try:
            return await asyncio.get_running_loop().run_in_executor(w.executor, w.runtime.step, cmd)
        except StepOutOfMemory:
            raise
        except Exception as exc:
            w.dead = f"worker thread raised {_describe(exc)}"
            log.error("worker %s step failed:\n%s", worker_id, "".join(traceback.format_exception(exc)))
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


# --- processes ------------------------------------------------------------------------------------


def _process_main(conn: Any, settings: dict[str, Any], env: dict[str, str], threads: int | None) -> None:
    """A worker process: load the model, then answer step / stop messages until the pipe closes."""
    os.environ.update(env)  # before torch is imported: CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS
    from controlplane.live.model_source import WorkerModelSettings

    # The daemon decides when workers stop: a SIGTERM or Ctrl+C sent to the whole process group
    # must not kill them in the middle of a graceful drain. The parent closing the pipe ends them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        runtime = WorkerRuntime.create(WorkerModelSettings(**settings), threads)
        conn.send(("ready", runtime.facts()))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("start_error", _describe(exc), traceback.format_exc()))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        kind = msg[0]
        try:
            if kind == "step":
                seq, cmd = msg[1], msg[2]
                try:
                    conn.send(("reply", seq, runtime.step(cmd)))
                except StepOutOfMemory as exc:
                    conn.send(("oom", seq, str(exc)))
                except Exception as exc:
                    conn.send(("error", seq, _describe(exc), traceback.format_exc()))
            elif kind == "ping":
                conn.send(("pong", msg[1]))
            elif kind == "stop":
                conn.send(("stopped",))
                return
        except (BrokenPipeError, EOFError, OSError):
            return


@dataclass
class _ProcWorker:
    worker_id: str
    process: Any
    conn: Any
    device: str
    ready: asyncio.Future
    stopped: asyncio.Future
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    stopping: bool = False
    dead: str | None = None


class ProcessPool(WorkerPool):
    """One OS process per worker (multiprocessing spawn), talking over a pipe.

    A worker process that exits or is killed is noticed by a reader thread at once (its pipe
    closes), whether it was busy or idle.
    """

    kind = "process"

    def __init__(
        self, *, cpu_threads: int | None = None, gpus: int | None = None, stop_timeout_s: float = 10.0
    ) -> None:
        super().__init__(cpu_threads=cpu_threads)
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")
        self._gpus = _GpuSlots(gpus)
        self._workers: dict[str, _ProcWorker] = {}
        self._seq = itertools.count()
        self.stop_timeout_s = stop_timeout_s

    async def start(
        self, worker_id: str, settings: WorkerModelSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        if worker_id in self._workers:
            raise WorkerStartError(f"worker {worker_id} already exists")
        loop = asyncio.get_running_loop()
        env: dict[str, str] = {}
        threads: int | None = None
        device = "cpu"
        if self._gpus.wants_gpu(settings):
            idx = self._gpus.take(worker_id)
            env["CUDA_VISIBLE_DEVICES"] = self._gpus.visible_name(idx)
            settings = settings.model_copy(update={"device": "cuda:0"})
            device = f"cuda (physical {env['CUDA_VISIBLE_DEVICES']})"
        else:
            threads = self.threads_for(expected_workers)
            env["OMP_NUM_THREADS"] = str(threads)
            if settings.device != "auto":
                device = settings.device
            elif self._gpus.count == 0:
                env["CUDA_VISIBLE_DEVICES"] = ""
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_process_main,
            args=(child_conn, settings.model_dump(), env, threads),
            name=f"controlplane-worker-{worker_id}",
            daemon=True,
        )
        try:
            await loop.run_in_executor(None, proc.start)
        except Exception as exc:
            self._gpus.release(worker_id)
            raise WorkerStartError(f"could not start a worker process: {_describe(exc)}") from exc
        finally:
            child_conn.close()
        w = _ProcWorker(worker_id, proc, parent_conn, device, loop.create_future(), loop.create_future())
        self._workers[worker_id] = w
        threading.Thread(target=self._reader, args=(w, loop), name=f"cp-reader-{worker_id}", daemon=True).start()
        try:
            return await asyncio.shield(w.ready)
        except WorkerLost as exc:
            raise WorkerStartError(str(exc)) from None

    def _reader(self, w: _ProcWorker, loop: asyncio.AbstractEventLoop) -> None:
        """Blocks on the worker's pipe (in a thread) and posts everything to the loop."""
        while True:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # an unpicklable reply: the worker is unusable
                msg = ("error", -1, f"bad message from worker: {_describe(exc)}", "")
            if not _post(loop, self._on_message, w, msg):
                return
        w.process.join(timeout=5)
        code = w.process.exitcode
        if code is None:
            reason = f"worker process {w.process.pid} closed its pipe"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"worker process {w.process.pid} was killed by {name}"
        else:
            reason = f"worker process {w.process.pid} exited with code {code}"
        _post(loop, self._on_exit, w, reason)

    def _on_message(self, w: _ProcWorker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            if not w.ready.done():
                w.ready.set_result(msg[1])
        elif kind == "start_error":
            if not w.ready.done():
                w.ready.set_exception(WorkerLost(msg[1]))
            log.error("worker %s failed to start:\n%s", w.worker_id, msg[2])
        elif kind in ("reply", "oom", "error"):
            fut = w.pending.pop(msg[1], None)
            if kind == "error":
                # A step that raised for another reason than memory leaves the backend in an
                # unknown state: the worker is retired and its requests retried elsewhere.
                log.error("worker %s step failed:\n%s", w.worker_id, msg[3])
                self._kill(w, f"worker step raised {msg[2]}")
                if fut is not None and not fut.done():
                    fut.set_exception(WorkerLost(w.dead))
                return
            if fut is None or fut.done():
                return
            if kind == "reply":
                fut.set_result(msg[2])
            else:
                fut.set_exception(StepOutOfMemory(msg[2]))
        elif kind == "stopped":
            w.stopping = True

    def _on_exit(self, w: _ProcWorker, reason: str) -> None:
        self._gpus.release(w.worker_id)
        with contextlib.suppress(Exception):
            w.conn.close()
        if not w.stopped.done():
            w.stopped.set_result(None)
        expected = w.stopping or w.dead is not None
        w.dead = w.dead or reason
        err = WorkerLost(w.dead)
        if not w.ready.done():
            w.ready.set_exception(err)
        for fut in w.pending.values():
            if not fut.done():
                fut.set_exception(err)
        w.pending.clear()
        if not expected:
            self._report_failure(w.worker_id, reason)

    def _kill(self, w: _ProcWorker, reason: str) -> None:
        if w.dead is None:
            w.dead = reason
            self._report_failure(w.worker_id, reason)
        with contextlib.suppress(Exception):
            w.process.kill()

    async def step(self, worker_id: str, cmd: StepCommand) -> StepReply:
        w = self._workers.get(worker_id)
        if w is None or w.dead or w.stopping or not w.ready.done():
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({w.dead})" if w and w.dead else ""))
        seq = next(self._seq)
        fut = asyncio.get_running_loop().create_future()
        w.pending[seq] = fut
        try:
            w.conn.send(("step", seq, cmd))
        except (OSError, ValueError) as exc:
            w.pending.pop(seq, None)
            raise WorkerLost(f"worker {worker_id}: {_describe(exc)}") from None
        return await fut

    async def stop(self, worker_id: str) -> None:
        w = self._workers.pop(worker_id, None)
        if w is None:
            return
        w.stopping = True
        if not w.ready.done():  # still loading: nothing to finish
            with contextlib.suppress(Exception):
                w.process.kill()
        elif w.process.is_alive():
            with contextlib.suppress(Exception):
                w.conn.send(("stop",))
            try:
                await asyncio.wait_for(asyncio.shield(w.stopped), self.stop_timeout_s)
            except TimeoutError:
                log.warning("worker %s did not stop in %.0fs; killing it", worker_id, self.stop_timeout_s)
                with contextlib.suppress(Exception):
                    w.process.kill()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(w.stopped), 5)
        self._gpus.release(worker_id)

    def alive(self, worker_id: str) -> bool:
        w = self._workers.get(worker_id)
        return w is not None and w.dead is None and not w.stopping and w.ready.done() and not w.ready.exception()

    def info(self, worker_id: str) -> dict[str, Any]:
        w = self._workers.get(worker_id)
        return {"pid": w.process.pid, "device": w.device} if w else {}

    def pid(self, worker_id: str) -> int | None:
        w = self._workers.get(worker_id)
        return w.process.pid if w else None

    def kill(self, worker_id: str) -> None:
        """SIGKILL a worker process (chaos testing); the pool reports it as failed."""
        w = self._workers.get(worker_id)
        if w is not None:
            os.kill(w.process.pid, signal.SIGKILL)

    def worker_ids(self) -> list[str]:
        return list(self._workers)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # the loop is closed: nobody is listening any more
        return False


# --- choosing a pool ------------------------------------------------------------------------------


def make_pool(kind: str, *, cpu_threads: int | None = None, **options: Any) -> WorkerPool:
    """A pool by name: ``thread``, ``process`` or ``ray`` (options go to its constructor)."""
    if kind == "thread":
        return LocalThreadPool(cpu_threads=cpu_threads, **options)
    if kind == "process":
        return ProcessPool(cpu_threads=cpu_threads, **options)
    if kind == "ray":
        from controlplane.live.pool_ray import RayWorkerPool

        return RayWorkerPool(cpu_threads=cpu_threads, **options)
    raise ValueError(f"unknown pool {kind!r}; choose one of {', '.join(POOL_KINDS)}")
