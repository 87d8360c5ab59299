"""Workers in OS processes (multiprocessing spawn), one per worker, talking over a pipe: a crash
or an out-of-memory kill takes only that worker. The default pool of the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
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
from controlplane.live.worker_runtime import WorkerRuntime, settings_from_payload, settings_payload

if TYPE_CHECKING:
    from controlplane.live.guardian_models import GuardianWorkerSettings
    from controlplane.live.model_source import WorkerModelSettings

log = logging.getLogger(__name__)

__all__ = ["ProcessPool"]



def _process_main(conn: Any, settings: tuple[str, dict[str, Any]], env: dict[str, str], threads: int | None) -> None:
    """A worker process: load the model, then answer step / command / stop messages until the
    pipe closes."""
    os.environ.update(env)  # before torch is imported: CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS

    # The daemon decides when workers stop: a SIGTERM or Ctrl+C sent to the whole process group
    # must not kill them in the middle of a graceful drain. The parent closing the pipe ends them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _progress_bars_lock_in_process()
    try:
        runtime = WorkerRuntime.create(settings_from_payload(settings), threads)
        conn.send(("ready", runtime.facts()))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("start_error", describe_error(exc), traceback.format_exc()))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            _exit_now()  # the daemon is gone
        kind = msg[0]
        try:
            if kind in ("step", "command"):
                seq, cmd = msg[1], msg[2]
                try:
                    conn.send(("reply", seq, (runtime.step if kind == "step" else runtime.command)(cmd)))
                except StepOutOfMemory as exc:
                    conn.send(("oom", seq, str(exc)))
                except Exception as exc:
                    conn.send(("error", seq, describe_error(exc), traceback.format_exc()))
            elif kind == "ping":
                conn.send(("pong", msg[1]))
            elif kind == "stop":
                conn.send(("stopped",))
                _exit_now()
        except (BrokenPipeError, EOFError, OSError):
            _exit_now()


def _progress_bars_lock_in_process() -> None:
    """Give tqdm a thread lock before anything draws a progress bar in this worker. Its default is a lock shared
    across processes: a named semaphore, which a spawned process registers with the daemon's resource tracker
    and unlinks at interpreter exit; `_exit_now` skips that, so the daemon ended with "resource_tracker: There
    appear to be 1 leaked semaphore objects" (transformers' "Loading weights" bar on a model loaded from a
    path, torch.compile's FX interpreter on a ``compile: true`` worker). A worker's bars go nowhere anyone
    reads them together with another process's."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - a dependency of transformers
        return
    tqdm.set_lock(threading.RLock())


def _exit_now() -> None:
    """End the worker process at once: an interpreter's own shutdown with torch and a model loaded
    took 3-10 s (module teardown, the allocator's frees), and the daemon's exit waited for it.
    Nothing of the worker's needs saving; its output streams are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


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
        self, *, cpu_threads: int | None = None, gpus: int | None = None, stop_timeout_s: float = 10.0,
        max_workers: int | None = None,
    ) -> None:
        super().__init__(cpu_threads=cpu_threads)
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")
        self._gpus = GpuSlots(gpus)
        self._slots = WorkerSlots(max_workers)
        self._workers: dict[str, _ProcWorker] = {}
        self._seq = itertools.count()
        self.stop_timeout_s = stop_timeout_s

    async def start(
        self, worker_id: str, settings: WorkerModelSettings | GuardianWorkerSettings, *, expected_workers: int = 1
    ) -> dict[str, Any]:
        if worker_id in self._workers:
            raise WorkerStartError(f"worker {worker_id} already exists")
        self._take_slot(self._slots, worker_id, settings)
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
            args=(child_conn, settings_payload(settings), env, threads),
            name=f"controlplane-worker-{worker_id}",
            daemon=True,
        )
        w = _ProcWorker(worker_id, proc, parent_conn, device, loop.create_future(), loop.create_future())
        # (its start may be awaited by nobody by then, a shutdown having cancelled it: the error is the pool's to
        # report, not asyncio's "Future exception was never retrieved")
        w.ready.add_done_callback(_retrieved)
        # Held before the first await: workers started at once (the daemon's initial ones) each
        # count the others against max_workers although their processes are still spawning.
        self._workers[worker_id] = w
        try:
            await loop.run_in_executor(None, proc.start)
        except Exception as exc:
            self._workers.pop(worker_id, None)
            self._gpus.release(worker_id)
            raise WorkerStartError(f"could not start a worker process: {describe_error(exc)}") from exc
        finally:
            child_conn.close()
        if w.stopping:  # stopped while its process was spawning: nobody else will end it
            with contextlib.suppress(Exception):
                proc.kill()
            raise WorkerStartError(f"worker {worker_id} was stopped while starting")
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
                msg = ("error", -1, f"bad message from worker: {describe_error(exc)}", "")
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
            # One line for the operator (the daemon's own error repeats it); the traceback only with --log-level debug.
            log.error("worker %s failed to start: %s", w.worker_id, msg[1])
            log.debug("worker %s start traceback:\n%s", w.worker_id, msg[2])
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
        return await self._send(worker_id, "step", cmd)

    async def command(self, worker_id: str, cmd: Any) -> Any:
        return await self._send(worker_id, "command", cmd)

    async def _send(self, worker_id: str, kind: str, cmd: Any) -> Any:
        w = self._workers.get(worker_id)
        if w is None or w.dead or w.stopping or not w.ready.done():
            raise WorkerLost(f"worker {worker_id} is not running" + (f" ({w.dead})" if w and w.dead else ""))
        seq = next(self._seq)
        fut = asyncio.get_running_loop().create_future()
        w.pending[seq] = fut
        try:
            w.conn.send((kind, seq, cmd))
        except (OSError, ValueError) as exc:
            w.pending.pop(seq, None)
            raise WorkerLost(f"worker {worker_id}: {describe_error(exc)}") from None
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
        if w is not None and w.process.pid is not None:  # None: still spawning
            os.kill(w.process.pid, signal.SIGKILL)

    def worker_ids(self) -> list[str]:
        return list(self._workers)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # the loop is closed: nobody is listening any more
        return False


def _retrieved(future: asyncio.Future) -> None:
    """Mark a worker's start future's exception as seen (the pool reports a lost worker itself)."""
    if not future.cancelled():
        future.exception()
