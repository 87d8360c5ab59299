"""The core's worker lifecycle: replicas start, become ready (and get their memory plan), fail or
stop; a lost replica's requests go elsewhere, and its GPU time is counted. A mixin of
`controlplane.core.ControlPlane`, which owns the state these methods use."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import MemoryPlan
from controlplane.hardware.cost import cost_per_1k_requests, run_cost
from controlplane.types import UNLIMITED_KV_BLOCKS, ReasonCode, RequestStatus, Worker, WorkerState

if TYPE_CHECKING:
    from controlplane.types import Request

__all__ = ["RUN_ENDED", "UNPLACEABLE", "WorkerLifecycle"]

#: How a driver's start failure says "no device or slot was free" (controlplane.live.placement):
#: such a scale-up is recorded as a ``scale_unplaced`` decision rather than a plain failure.
UNPLACEABLE = "unplaceable"
UNPLACED_RETRY_S = 15.0  # after an unplaced scale-up, the next scale-up of that model waits this long
#: The reason of the ``stopped`` worker events the run's end records (`WorkerLifecycle._stop_at_run_end`).
RUN_ENDED = "run ended"


class WorkerLifecycle:
    """Worker events in, replicas and their requests' fate out."""

    workers: dict[str, Worker]
    unrouted: deque[Request]
    _out: list[Any]
    _tick_s: float
    #: Whether the driver says when a replica it started was placed (`ev.WorkerPlaced`; the live driver: a device or
    #: worker slot was free). Then a replica's ``starting`` worker event and its GPU time begin there, and one no
    #: device or slot was free for (`UNPLACEABLE`) records no ``starting`` and no GPU time: its only worker event is
    #: ``failed`` with ``"unplaced": true``. False (the simulator): a replica starts as it is added.
    confirms_placement = False

    def _add_worker(self, model: str, reason: str, *, warm: bool = False) -> Worker:
        """A new replica of ``model``, starting; ``warm``: its driver makes it ready at once (`Worker.ready_by_s`)."""
        n = self.ctx.ids.next(f"worker:{model}")
        wid = f"{model}-{n}"
        now = self.clock.now_s
        w = Worker(worker_id=wid, model=model, started_s=now, ready_by_s=now if warm else None)
        d = self._deployments[model]
        w.max_num_seqs, w.max_batch_tokens, w.kv_block_size = d.max_num_seqs, d.max_batch_tokens, d.kv_block_size
        self.workers[wid] = w
        self._workers_changed()
        if self.confirms_placement:  # its start is recorded once the driver placed it (`_announce`)
            self.__dict__.setdefault("_placing", {})[wid] = {"model": model, "reason": reason}
        else:
            self._worker_alive_since[wid] = now
            self._emit(ev.WorkerChanged(now, wid, "starting", {"model": model, "reason": reason}))
        self._out.append(act.StartWorker(wid, model))
        if self.stats.num_scale_events:  # (0: the initial replicas, before any scale event)
            self._scale_up_started(wid, self.stats.num_scale_events)
        return w

    def _scale_up_started(self, wid: str, event: int) -> None:
        """``wid`` is one of the replicas scale event ``event`` started (`_scale_up_resolved`)."""
        self.__dict__.setdefault("_scale_up_of", {})[wid] = event
        counts = self.__dict__.setdefault("_scale_up_counts", {}).setdefault(event, [0, 0])
        counts[0] += 1

    def _scale_up_resolved(self, wid: str, *, unplaced: bool) -> None:
        """``wid`` was placed or not. A scale-up none of whose replicas could be placed changed nothing:
        it is not counted in ``num_scale_events`` (else each retry of a full pool counts as a change)."""
        event = (self.__dict__.get("_scale_up_of") or {}).pop(wid, None)
        if event is None:
            return
        counts = self._scale_up_counts[event]
        if not unplaced:
            del self._scale_up_counts[event]  # one replica placed: the scale event took effect
            for other in [o for o, e in self._scale_up_of.items() if e == event]:
                del self._scale_up_of[other]
            self._scale_up_settled(event, placed=True)
            return
        counts[1] += 1
        if counts[1] == counts[0]:
            del self._scale_up_counts[event]
            self.stats.num_unplaced_scale_events += 1
            self._scale_up_settled(event, placed=False)  # (nor does it start a cooldown)

    def _announce(self, w: Worker, now: float) -> None:
        """``w``, started by a driver that places workers (`confirms_placement`), was placed (or got further: ready,
        stopped, failed for another reason than `UNPLACEABLE`): its ``starting`` worker event, and its GPU time from
        now. Nothing for a replica already announced."""
        placing = self.__dict__.get("_placing")
        detail = placing.pop(w.worker_id, None) if placing else None
        if detail is None:
            return
        self._worker_alive_since[w.worker_id] = now
        self._emit(ev.WorkerChanged(now, w.worker_id, "starting", detail))

    def _on_worker_placed(self, e: ev.WorkerPlaced) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None and w.state is WorkerState.STARTING:
            self._announce(w, e.time_s)

    def _plan_memory(self, w: Worker, trigger: str) -> None:
        plan: MemoryPlan
        plan, plugin = self._decide("cp_plan_memory", w, trigger)
        if plan is None:
            return
        w.max_num_seqs = plan.max_num_seqs
        w.max_batch_tokens = plan.max_batch_tokens
        w.num_kv_blocks = plan.num_kv_blocks
        w.kv_block_size = plan.kv_block_size
        self.kv.planned(w)
        # An unlimited KV cache (no budget: `UNLIMITED_KV_BLOCKS`, 2**30) is stored as null, not as a capacity
        # a query would add up.
        blocks = plan.num_kv_blocks if plan.num_kv_blocks < UNLIMITED_KV_BLOCKS else None
        self._decision("cp_plan_memory", plugin, "memory_plan", w.worker_id, plan.reason,
                       {"trigger": trigger, "max_num_seqs": plan.max_num_seqs,
                        "max_batch_tokens": plan.max_batch_tokens, "num_kv_blocks": blocks,
                        "kv_block_size": plan.kv_block_size})

    def _on_worker_ready(self, e: ev.WorkerReady) -> None:
        w = self.workers.get(e.worker_id)
        if w is None or w.state is not WorkerState.STARTING:
            return
        self._announce(w, e.time_s)  # (a driver that readied it without saying it was placed)
        w.state = WorkerState.READY
        self._workers_changed()
        w.ready_s = e.time_s
        self._emit(ev.WorkerChanged(e.time_s, w.worker_id, "ready", e.memory or None))
        self._scale_up_resolved(w.worker_id, unplaced=False)
        failed = self.__dict__.get("_start_failed")
        if failed:
            failed.pop(w.model, None)  # it can start after all
        self._plan_memory(w, "ready")
        self._route_unrouted(w.model)
        self._schedule(w)

    def _no_worker_for(self, r: Request) -> None:
        """No worker of ``r``'s model is ready or starting. It waits for one (a start, at the next tick
        or when the autoscaler sees it waiting), unless the model's last start failed: then nothing
        is on its way and waiting would only end at the client's timeout, so it is refused at once,
        with that start's error (code ``unavailable``) and a ``retry_after_s``: until the start the
        autoscaler holds back (`ScaleDecision.next_start_s`), else one tick (a start can begin then).
        Those refused as the start fails get one tick too: the autoscaler answers a failure (a new
        start, or its backoff) only at its next tick, and a retry then gets that answer. A start in
        progress makes requests wait again (they go to the starting worker); one that becomes ready
        clears the failure."""
        failed = self.__dict__.get("_start_failed")
        why = failed.get(r.model) if failed else None
        if why is None:
            self.unrouted.append(r)
            return
        # Retry after the autoscaler's next start (its backoff), else the next tick, when a start can begin.
        next_start = (self.__dict__.get("_next_start") or {}).get(r.model)
        now = self.clock.now_s
        r.retry_after_s = next_start - now if next_start is not None and next_start > now else self._tick_s
        self._reject(r, f"model {r.model!r} has no worker up or starting; its last start failed: {why}", "core",
                     "cp_route_request", ReasonCode.UNAVAILABLE)

    def models_down(self) -> dict[str, str]:
        """The models refused at once (`_no_worker_for`): no worker up or starting, the last start
        failed; each with that start's error, in one line."""
        failed = self.__dict__.get("_start_failed") or {}
        accepting = {w.model for w in self.workers.values() if w.state in (WorkerState.READY, WorkerState.STARTING)}
        return {m: why for m, why in failed.items() if m not in accepting}

    def _route_unrouted(self, model: str) -> None:
        if not self.unrouted:
            return
        pending, self.unrouted = self.unrouted, deque()
        for r in pending:
            if r.model == model:
                self._route(r)
            else:
                self.unrouted.append(r)

    def _evacuate(self, w: Worker, reason: str) -> None:
        """Send a lost worker's requests elsewhere (or fail them after too many retries). A worker that never became
        ready ran none of them: waiting on its start is no try, so it counts no retry. Each request sent elsewhere
        gets a ``reroute`` decision first (the lost worker, why, the retry it is), then its route as usual."""
        batch = self._batches.pop(w.worker_id, None)
        if batch is not None:
            w.busy = False
        victims = list(w.running) + list(w.waiting)
        w.running.clear()
        w.waiting.clear()
        w.num_kv_blocks_used = 0
        self.kv.forget(w)
        for r in victims:
            if r.request_id in self._cancelling:
                self._cancel(r, None, *self._cancelling[r.request_id])
                continue
            lost = "stopped" if reason == "stopped" else f"failed: {' '.join((reason or 'no reason').split())}"
            if w.ready_s is not None:  # (a start that failed ran nothing: waiting on it is no try)
                r.num_retries += 1
                max_retries = self.config.cluster.max_retries
                if r.num_retries > max_retries:
                    self._fail(r, f"worker failed {r.num_retries} times, last {w.worker_id}: {reason}",
                               ReasonCode.WORKER_FAILED)
                    continue
                why = f"retry {r.num_retries} of max_retries {max_retries}: worker {w.worker_id} {lost}"
            else:
                why = f"worker {w.worker_id} {lost} before it was ready (no retry counted)"
            self._decision("cp_route_request", "core", "reroute", r.request_id, why,
                           {"worker": w.worker_id, "retry": r.num_retries})
            self.kv.drop(r)
            r.status = RequestStatus.WAITING
            r.worker_id = None
            self._route(r)

    def _on_worker_failed(self, e: ev.WorkerFailed) -> None:
        w = self.workers.get(e.worker_id)
        if w is None or w.state in (WorkerState.FAILED, WorkerState.STOPPED):
            return
        never_ready = w.state is WorkerState.STARTING
        unplaced = never_ready and UNPLACEABLE in (e.reason or "")
        if not unplaced:
            self._announce(w, e.time_s)  # (a start that failed before it was placed, for another reason)
        w.state = WorkerState.FAILED
        self._workers_changed()
        self._stop_gpu_clock(w, e.time_s, placed=not unplaced)
        # (an unplaced start is no crash: its detail says so, and /metrics counts it as kind "unplaced"; a driver
        # that places workers recorded no `starting` for it, `confirms_placement`)
        self._emit(ev.WorkerChanged(e.time_s, w.worker_id, "failed",
                                    {"reason": e.reason, "unplaced": True} if unplaced else {"reason": e.reason}))
        self._scale_up_resolved(w.worker_id, unplaced=unplaced)
        if never_ready:  # a scale-up that did not happen is a decision outcome, not only a worker event
            self._decision("cp_scale", "core", "scale_unplaced" if unplaced else "start_failed", w.model,
                           f"replica {w.worker_id} {'could not be placed' if unplaced else 'did not start'}: "
                           f"{e.reason}", {"worker": w.worker_id, "placed": not unplaced})
            if unplaced:  # no more scale-ups of this model for a while: one row per attempt, not per tick
                holds = self.__dict__.setdefault("_unplaced_until", {})
                holds[w.model] = e.time_s + UNPLACED_RETRY_S
            if not any(o.model == w.model and o.state is WorkerState.READY for o in self.workers.values()):
                # Until one of its workers is ready, requests finding none up or starting are refused (`_no_worker_for`).
                self.__dict__.setdefault("_start_failed", {})[w.model] = " ".join((e.reason or "no reason").split())
        self._evacuate(w, e.reason)
        self._forget(w)
        if never_ready:
            self._route_unrouted(w.model)  # those waiting for a worker: refused too if none is up or starting

    def _on_worker_stopped(self, e: ev.WorkerStopped) -> None:
        w = self.workers.get(e.worker_id)
        if w is None or w.state is WorkerState.STOPPED:
            return
        self._announce(w, e.time_s)
        w.state = WorkerState.STOPPED
        self._workers_changed()
        self._stop_gpu_clock(w, e.time_s)
        self._emit(ev.WorkerChanged(e.time_s, w.worker_id, "stopped", None))
        self._scale_up_resolved(w.worker_id, unplaced=False)
        if w.running or w.waiting:
            self._evacuate(w, "stopped")
        self._forget(w)

    def _forget(self, w: Worker) -> None:
        """A stopped or failed worker leaves the cluster view: per-tick work stays proportional to
        the live replicas however long the run (reports from it later are stale and ignored)."""
        self.workers.pop(w.worker_id, None)
        self._workers_changed()
        self.kv.forget(w)
        self._batches.pop(w.worker_id, None)
        self._interrupted.discard(w.worker_id)

    def _stop_at_run_end(self, now: float) -> None:
        """The run ends at ``now``: every replica still alive stops, its GPU time counted, with a ``stopped``
        worker event (detail ``{"reason": "run ended"}``). A simulated run's replicas (and a daemon's that still
        had requests to serve at its end) recorded no stop: their lifetimes were not in the worker events, whose
        starts and stops now give the summary's ``gpu_seconds``. Left in ``workers`` (stopped), so a late report
        of one (its start failing as the daemon closes) is ignored."""
        stopped = False
        for w in self.workers.values():
            if w.state is WorkerState.STARTING:
                self._announce(w, now)
            self._stop_gpu_clock(w, now)
            if w.state is not WorkerState.STOPPED and w.state is not WorkerState.FAILED:
                w.state = WorkerState.STOPPED
                stopped = True
                self._emit(ev.WorkerChanged(now, w.worker_id, "stopped", {"reason": RUN_ENDED}))
        if stopped:
            self._workers_changed()

    def _stop_gpu_clock(self, w: Worker, now: float, *, placed: bool = True) -> None:
        """``w`` is no longer alive: its GPU time is counted, and its span for the peak replica count (not a
        replica that found no free device or slot: it never existed and held no GPU, `UNPLACEABLE`)."""
        since = self._worker_alive_since.pop(w.worker_id, None)
        if since is not None and placed:
            self.stats.replica_spans.append((since, now))
            d = self._deployments[w.model]
            gpu_s = (now - since) * d.gpus_per_replica
            self.stats.gpu_seconds += gpu_s
            self.stats.gpu_seconds_by_gpu[d.gpu] += gpu_s
            self.stats.busy_gpu_seconds += w.busy_s * d.gpus_per_replica
            if self._by_model is not None:
                self._by_model.replica_stopped(w.model, since, now, d.gpu, gpu_s)

    def _add_cost(self, summary: dict[str, Any]) -> None:
        """The run's GPU-hours and their price (``cluster.gpu_prices``) in its summary."""
        summary["gpu_hours"] = float(f"{self.stats.gpu_seconds / 3600.0:.9g}")
        try:
            cost = run_cost(self.stats.gpu_seconds_by_gpu, self.config.cluster.gpu_prices)
        except KeyError as exc:  # a GPU type without a price: the run still ends, the cost is unknown
            summary["cost_usd"] = None
            summary["cost_error"] = str(exc.args[0])
            return
        summary["cost_usd"] = float(f"{cost:.9g}")
        # (per request completed: refused, failed or unfinished requests are not what the money bought; a run
        # that completed none has no cost per request, not a small one)
        per_1k = cost_per_1k_requests(cost, summary.get("num_completed") or 0)
        summary["cost_per_1k_requests_usd"] = float(f"{per_1k:.9g}") if per_1k is not None else None
