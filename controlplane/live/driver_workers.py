"""The live driver's workers: start one in the pool (its weights loaded, its shared guardians
hosted, then ``WorkerReady`` with its real device facts), stop one, and tell the core when one
dies. A mixin of `controlplane.live.driver.LiveDriver`, which owns the state these methods use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.live.placement import NoFreeDevice
from controlplane.live.worker_messages import WorkerStartError, describe_error
from controlplane.worker_lifecycle import UNPLACEABLE

if TYPE_CHECKING:
    from controlplane.config import RunConfig
    from controlplane.live.batch_runner import BatchRunner
    from controlplane.live.guardian_pool import LiveGuardians
    from controlplane.live.pool import WorkerPool
    from controlplane.live.served_model import ServedModel

log = logging.getLogger("controlplane.live.driver")  # the driver's own logger: one name for operators' log settings

__all__ = ["LiveWorkers"]


class LiveWorkers:
    """``StartWorker`` and ``StopWorker`` carried out; a worker's death reported."""

    config: RunConfig
    pool: WorkerPool
    models: dict[str, ServedModel]
    guardians: LiveGuardians
    batches: BatchRunner
    worker_facts: dict[str, dict[str, Any]]
    last_worker_failure: str | None
    _starting: dict[str, asyncio.Task]
    _failed_workers: set[str]
    _closed: bool
    _finished: bool
    draining: bool

    def _start_worker(self, a: act.StartWorker) -> None:
        if self.draining and self._has_worker(a.model, besides=a.worker_id):
            # A scale-up after SIGTERM: its worker would load only to be stopped. Recorded as unplaced (the core
            # holds the model's next scale-up a while); a model with no worker at all still gets one.
            log.debug("worker %s not started: the daemon is draining", a.worker_id)
            self._feed_later(0, ev.WorkerFailed, a.worker_id, f"{UNPLACEABLE}: the daemon is draining (no new workers)")
            return
        task = self._spawn(self._run_start_worker(a.worker_id, a.model), f"cp-start-{a.worker_id}")
        self._starting[a.worker_id] = task

    def _has_worker(self, model: str, *, besides: str) -> bool:
        """A worker of ``model`` other than ``besides`` is ready or starting."""
        return any(w.model == model and w.accepts_requests and wid != besides for wid, w in self.core.workers.items())

    async def _run_start_worker(self, wid: str, model: str) -> None:
        expected = sum(m.replicas for m in self.config.cluster.models) or 1
        # Placed on the next loop turn: a start with no free slot fails before that (the pools take a slot before
        # their first await, and raise `NoFreeDevice` there), and a start that was never placed was never "loading",
        # nor recorded as a starting worker (`WorkerLifecycle.confirms_placement`).
        said = asyncio.get_running_loop().call_soon(self._placed, wid, model)
        try:
            facts = await self.pool.start(wid, self.models[model].settings, expected_workers=expected)
        except asyncio.CancelledError:
            raise
        except NoFreeDevice as exc:  # a scale-up with nowhere to go: recorded as unplaced, asked again later
            said.cancel()
            self._log_unplaced(wid, model, str(exc).removeprefix(f"{UNPLACEABLE}: "))
            self._worker_failed(wid, str(exc))
            return
        except Exception as exc:
            said.cancel()  # (a start that failed before its first await was never "loading": no line after its error)
            if self._closed:  # stopped while loading, at shutdown
                log.debug("worker %s not started: the daemon stopped (%s)", wid, exc)
                return
            log.error("worker %s could not start: %s", wid, exc)
            self._worker_failed(wid, str(exc) if isinstance(exc, WorkerStartError) and str(exc) else describe_error(exc))
            return
        finally:
            self._starting.pop(wid, None)
        self.worker_facts[wid] = facts
        if not self._closed:
            await self.guardians.host(wid)  # shared guardians load before the worker takes requests
        if self._closed:
            await self.pool.stop(wid)
            return
        log.info("worker %s ready: %s", wid, {k: facts.get(k) for k in ("device", "precision", "pid")})
        self._feed(ev.WorkerReady(self.now_s(), wid, memory=facts))

    def _placed(self, wid: str, model: str) -> None:
        """The pool found ``wid`` a device or slot: it loads its model now, and the core records its start."""
        log.info("worker %s starting: loading %s (this can take minutes for a large model)", wid,
                 self.models[model].settings.source_name())
        if self._is_current(wid):
            self._feed(ev.WorkerPlaced(self.now_s(), wid))

    @staticmethod
    def _log_unplaced(wid: str, model: str, why: str) -> None:
        """An unplaced start, at DEBUG: the scale-up's own line names every replica it could not place
        (`controlplane.live.event_log`, at WARNING for a model's first since one was placed)."""
        log.debug("worker %s of %s not started: no device or worker slot was free (%s)", wid, model, why)

    async def _settle_starts(self, timeout_s: float = 2.0) -> None:
        """Wait (a little) for the starts of workers the pool just stopped: their start ends with the
        worker's loss, taken by the start (a start cancelled instead left that error in a future nobody
        read: "Future exception was never retrieved" at shutdown). One still loading then is cancelled."""
        starts = list(self._starting.values())
        if not starts:
            return
        _done, pending = await asyncio.wait(starts, timeout=timeout_s)
        for t in pending:
            t.cancel()

    def _stop_worker(self, a: act.StopWorker) -> None:
        self._spawn(self._run_stop_worker(a.worker_id), f"cp-stop-{a.worker_id}")

    async def _run_stop_worker(self, wid: str) -> None:
        starting = self._starting.get(wid)
        if starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait([starting])
        self.guardians.unhost(wid)
        await self.pool.stop(wid)
        self.batches.forget_worker(wid)
        self._feed(ev.WorkerStopped(self.now_s(), wid))

    def _is_current(self, wid: str) -> bool:
        return wid not in self._failed_workers and not self._finished

    def _worker_failed(self, wid: str, reason: str) -> None:
        """A worker died (the pool's ``on_failure``, a failed step or start): tell the core (a
        guardian's own worker: its guardian handles it)."""
        if self.guardians.worker_failed(wid, reason) or wid in self._failed_workers or self._finished:
            return
        self._failed_workers.add(wid)
        self.last_worker_failure = f"{wid}: {reason}"
        self.batches.worker_lost(wid, reason)  # quarantines its step's requests: not re-routed
        self.batches.forget_worker(wid)
        self._feed(ev.WorkerFailed(self.now_s(), wid, reason))
        self._spawn(self.pool.stop(wid), f"cp-stop-{wid}")
