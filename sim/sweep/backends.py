"""Where a sweep's runs execute: in this process, a local process pool, or Ray.

Each backend yields ``RunOutcome``s as runs finish (in any order). Traces are shipped once:
Ray puts each into the object store and passes the reference to every run; the pool hands
them to each worker process once, at its start. A backend reused for another sweep ships a
trace again when its requests differ from those shipped under the same id (`_same_trace`):
ids name only the seed, so another trace file (or transforms) reuses them. ``auto`` takes Ray
when it is installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any

from controlplane.errors import ControlPlaneError
from sim.interrupts import handlers_kept
from sim.sweep.lost_runs import LostRuns, ended
from sim.sweep.main_guard import check_main_guard
from sim.sweep.worker import RunOutcome, RunTask, run_task
from sim.traces import TraceRequest

__all__ = ["BACKENDS", "Backend", "backend_name", "check_ray_address", "make_backend", "ray_available"]

BACKENDS = ("auto", "ray", "pool", "serial")

Traces = Mapping[str, list[TraceRequest]]
Death = tuple[int | None, str]  # (the token of the run a worker died running, None where none; how it ended)

log = logging.getLogger("controlplane.sweep")


def _same_trace(shipped: list[TraceRequest] | None, trace: list[TraceRequest]) -> bool:
    """Whether ``trace`` is what was shipped under its id: a sweep's trace ids name its seeds
    (``seed=0``), so a second sweep on the same backend, replaying another file, reuses the ids
    and would otherwise replay the first sweep's requests. (Compared by content: a second read of
    the same file ships nothing again; about 20 ms for 44,000 requests.)"""
    return shipped is not None and (shipped is trace or shipped == trace)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class Backend:
    name = "serial"

    def run(self, tasks: Sequence[RunTask], traces: Traces) -> Iterator[RunOutcome]:
        for task in tasks:
            yield run_task(task, traces[task.trace_id])

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Close without waiting for runs in flight (Ctrl-C, an error): their results are not wanted."""
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- process pool --------------------------------------------------------------------------

_POOL_TRACES: dict[str, list[TraceRequest]] = {}


_STARTED: list[Connection] = []  # (in a worker) where it says which run it starts: `_pool_run`


def _pool_init(traces: dict[str, list[TraceRequest]], driver_alive: Connection | None = None,
               started: Connection | None = None) -> None:
    _POOL_TRACES.clear()
    _POOL_TRACES.update(traces)
    _STARTED[:] = [started] if started is not None else []
    if driver_alive is not None:
        threading.Thread(target=_exit_with_driver, args=(driver_alive,), name="exit-with-driver", daemon=True).start()


def _exit_with_driver(driver_alive: Connection) -> None:
    """Wait for the end of the pipe whose other end only the driver holds: it closes when the driver
    ends, even killed (SIGKILL, the OOM killer), and the worker exits then, idle or mid-run. (A worker
    otherwise waits for its next task forever, and the forkserver and resource tracker with it.)"""
    try:
        driver_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _pool_run(task: RunTask, token: int | None = None) -> RunOutcome:
    """Run ``task``, having told the driver that this process runs it (``token``): should the process die, the
    driver knows which run died with it (`PoolBackend._run_pool`). (A message of a few bytes, written whole into
    the pipe every worker shares.)"""
    if _STARTED and token is not None:
        _STARTED[0].send((os.getpid(), token))
    return run_task(task, _POOL_TRACES[task.trace_id])


def _deaths(pool: ProcessPoolExecutor) -> list[tuple[int, str]]:
    """The worker processes of a broken ``pool`` that ended on their own, and how (`ended`): not those the executor
    then stopped (SIGTERM), nor those still stopping. Waited for a second at most (a process just dead may not be
    reaped yet)."""
    deadline = time.monotonic() + 1.0
    while True:
        processes = list((getattr(pool, "_processes", None) or {}).items())
        deaths = [(pid, ended(pid, p.exitcode)) for pid, p in processes
                  if p.exitcode is not None and p.exitcode != -signal.SIGTERM]
        if deaths or time.monotonic() > deadline:
            return deaths
        time.sleep(0.01)


class PoolBackend(Backend):
    """A ``ProcessPoolExecutor`` (forkserver) whose workers get the traces once, at start, and exit
    when the driver does, even killed (`_exit_with_driver`). A worker that dies (SIGKILL, the OOM killer) breaks
    the executor for good: a new one runs the runs not done, the dead worker's run among them once
    (`sim.sweep.lost_runs`)."""

    name = "pool"

    def __init__(self, workers: int | None = None) -> None:
        check_main_guard()  # (a script without `if __name__ == "__main__":`: its workers would start it again)
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        self._alive: Connection | None = None  # closed once the workers are shut down (`_exit_with_driver`)
        self._shipped: dict[str, list[TraceRequest]] = {}  # what the workers hold, by trace id
        self._dropped: list[Any] = []  # the processes of an executor shut down without waiting (`_drop_queued`)
        self._started: Connection | None = None  # what the workers say they start (`_pool_run`), by pid

    def _pool(self, traces: Traces) -> ProcessPoolExecutor:
        """The executor whose workers hold ``traces``: started again (the traces shipped anew) when
        one is missing or differs from what they hold (`_same_trace`)."""
        stale = any(not _same_trace(self._shipped.get(k), t) for k, t in traces.items())
        if self._executor is None or stale:
            self.close()
            import multiprocessing

            watched, self._alive = multiprocessing.Pipe(duplex=False)
            self._started, started = multiprocessing.Pipe(duplex=False)
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("forkserver"),
                initializer=_pool_init, initargs=(dict(traces), watched, started),
            )
            self._shipped = dict(traces)
        return self._executor

    def run(self, tasks: Sequence[RunTask], traces: Traces) -> Iterator[RunOutcome]:
        todo = dict(enumerate(tasks))  # by token: the runs not come back yet
        lost, fruitless = LostRuns(), 0
        while todo:
            left = len(todo)
            deaths = yield from self._run_pool(todo, traces)
            if deaths is None:  # (every run came back)
                return
            if not deaths:
                log.warning("a worker process of the pool died (how, not known): the runs not done run on a new pool")
            for token, how in deaths:  # (the pool broken: its runs not done run on a new one)
                if token is None:
                    log.warning("%s, running no run then: the runs not done run on a new pool", how)
                elif (outcome := lost.lost(token, todo[token], how)) is not None:
                    del todo[token]
                    yield outcome
            fruitless = 0 if len(todo) < left or any(t is not None for t, _ in deaths) else fruitless + 1
            if fruitless == 3:  # (no run came back, and no run to blame: the workers die as they start)
                raise ControlPlaneError(f"the pool's worker processes died 3 times in a row before any run came "
                                        f"back ({deaths[-1][1] if deaths else 'none found dead'}): "
                                        f"{len(todo)} runs not done")

    def _run_pool(self, todo: dict[int, RunTask], traces: Traces) -> Generator[RunOutcome, None, list[Death] | None]:
        """Run the runs of ``todo`` (by token) on the pool, yielding each as it comes back (and taking it off
        ``todo``); None once every run came back. When a worker dies, the executor is broken for every run it
        held: the pool is let go (`_drop_queued`), and how each dead worker ended is returned with the token of
        the run it was running (None where none: it died between runs)."""
        pool = self._pool(traces)
        futures = {pool.submit(_pool_run, task, token): token for token, task in todo.items()}
        running: dict[int, int] = {}  # worker pid -> the token of the run it started last (`_pool_run`)
        broken = False
        try:
            while futures:
                self._read_started(running)  # (before waiting: a worker blocks on a full pipe)
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for f in done:
                    token = futures.pop(f)
                    if isinstance(f.exception(), BrokenProcessPool):
                        broken = True
                        continue
                    del todo[token]
                    yield f.result()
                if broken:
                    self._read_started(running)
                    return [(running[pid] if running.get(pid) in todo else None, how) for pid, how in _deaths(pool)]
            return None
        finally:
            if futures or broken:  # (stopped before the end: Ctrl-C, an error, a caller done with the results)
                self._drop_queued(pool)

    def _read_started(self, running: dict[int, int]) -> None:
        """What the workers said they started since last read (`_pool_run`), into ``running`` (pid -> token)."""
        try:
            while self._started is not None and self._started.poll():
                pid, token = self._started.recv()
                running[pid] = token
        except (EOFError, OSError):
            pass

    def _drop_queued(self, pool: ProcessPoolExecutor) -> None:
        """Drop the runs not started yet: the executor is shut down without waiting, and its own
        thread cancels their futures. (Cancelled from here, a future could be cancelled while that
        thread marks the pool broken, as a worker killed by the Ctrl-C a terminal sends its whole
        process group makes it: it then failed to set the future's error, with a traceback on stderr,
        `InvalidStateError: CANCELLED`.) Its processes are kept for `abort`; the next run starts another pool."""
        self._dropped.extend((getattr(pool, "_processes", None) or {}).values())  # (the shutdown forgets them)
        pool.shutdown(wait=False, cancel_futures=True)
        if self._executor is pool:
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._alive is not None:
            self._alive.close()  # (the workers of a pool `_drop_queued` let go exit with it)
            self._alive = None
        if self._started is not None:
            self._started.close()
            self._started = None
        self._shipped = {}
        self._dropped = []

    def abort(self) -> None:
        processes = list(self._dropped)
        if self._executor is not None:
            processes += (self._executor._processes or {}).values()  # (3.11 has no public way)
        for process in processes:
            process.terminate()  # (a run in flight would be waited for to its end, and its result dropped)
        for process in processes:
            # A worker's replay takes SIGTERM as a clean stop and then sends its run back, into a pipe that
            # nobody reads once the pool is shut down: it hung there, and close() with it (2 runs in 10).
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
        self._dropped = []
        self.close()


# -- Ray -----------------------------------------------------------------------------------


def _ray_run(task: RunTask, trace: list[TraceRequest]) -> RunOutcome:
    return run_task(task, trace)


def _ray_death(exc: Exception) -> str:
    """How a Ray task's worker died, in words (Ray names no pid nor signal): its error's first line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"its Ray worker process died ({type(exc).__name__}{': ' + first if first else ''})"


def _no_cluster(address: str | None, why: str) -> ConnectionError:
    # (Ray's own text names a flag of its CLI: `--address`)
    return ConnectionError(f"no Ray cluster found at --ray-address {address} (start one with `ray start --head`, or "
                           f"leave --ray-address out for a local Ray): {why}")


def check_ray_address(address: str | None) -> None:
    """Refuse an address with nothing listening (`ConnectionError`) after a short TCP connection try:
    ``ray.init`` there retried for minutes with only Ray's warnings (`controlplane.live.ray_connect`)."""
    from controlplane.live.ray_connect import check_reachable

    try:
        check_reachable(address)
    except ConnectionError as exc:
        raise _no_cluster(address, str(exc)) from None


class RayBackend(Backend):
    """Runs as Ray tasks (one CPU each); a local Ray with this machine's cores unless ``address``."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        import ray

        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            if address:
                check_ray_address(address)
            try:
                with handlers_kept(signal.SIGTERM, signal.SIGINT):  # (Ray's SIGTERM handler exits at once)
                    ray.init(**kwargs)
            except ConnectionError as exc:
                raise _no_cluster(address, str(exc).splitlines()[0]) from None
            self._started = True
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_run)  # (a dead worker's run: `LostRuns`)
        #: a task's worker process died (killed, out of memory, its node lost), not the run raising
        self._died = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError)
        self._refs: dict[str, tuple[list[TraceRequest], Any]] = {}  # by trace id: the trace put, its reference

    def run(self, tasks: Sequence[RunTask], traces: Traces) -> Iterator[RunOutcome]:
        ray = self.ray
        for trace_id, trace in traces.items():
            shipped = self._refs.get(trace_id)
            if shipped is None or not _same_trace(shipped[0], trace):  # (another sweep's trace under the id)
                self._refs[trace_id] = (trace, ray.put(trace))  # once: every run gets the reference
        tokens = {self._submit(t): token for token, t in enumerate(tasks)}  # ref -> its run's token
        lost = LostRuns()
        try:
            while tokens:
                done, _ = ray.wait(list(tokens), num_returns=1)
                for ref in done:
                    token = tokens.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except self._died as exc:  # (its worker process died: once, run again on another)
                        outcome = lost.lost(token, tasks[token], _ray_death(exc))
                        if outcome is None:
                            tokens[self._submit(tasks[token])] = token
                            continue
                    yield outcome
        finally:
            for ref in tokens:
                ray.cancel(ref)

    def _submit(self, task: RunTask) -> Any:
        return self._remote.remote(task, self._refs[task.trace_id][1])

    def close(self) -> None:
        self._refs.clear()
        if self._started:
            self.ray.shutdown()
            self._started = False


def backend_name(name: str, ray_address: str | None = None) -> str:
    """The backend ``name`` runs on, ``auto`` resolved as `make_backend` resolves it (Ray where it is installed or
    ``ray_address`` is given, else the pool), without importing or starting it: what a resumed sweep with nothing
    left to run reports, having started none."""
    if name == "auto":
        return "ray" if ray_address or importlib.util.find_spec("ray") is not None else "pool"
    return name


def make_backend(name: str = "auto", *, workers: int | None = None, ray_address: str | None = None) -> Backend:
    """``auto``: Ray when installed (and always when ``ray_address`` is given), else the pool."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        name = "ray" if ray_available() or ray_address else "pool"
    if name == "ray":
        if not ray_available():
            raise ValueError("backend ray: Ray is not installed (pip install 'controlplane[ray]'), or use --backend pool")
        return RayBackend(ray_address, workers)
    if ray_address:
        raise ValueError(f"--ray-address needs the ray backend, not {name}")
    if name == "pool":
        return PoolBackend(workers)
    return Backend()
