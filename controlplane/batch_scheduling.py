"""The core's batching: an idle worker asks the batching policy for its next batch, which is
checked (`controlplane.batch_plan_checks`) and started; a finished batch advances its requests
(prefilled, decoded, completed), a failed one preempts them. A mixin of
`controlplane.core.ControlPlane`, which owns the state these methods use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.batch_plan_checks import iterations_in_kv, plan_error, replacement_plan
from controlplane.decisions import BatchPlan
from controlplane.iterations import advance_batch, plan_iterations
from controlplane.types import Batch, Decision, ReasonCode, Request, RequestStatus, Worker, WorkerState

if TYPE_CHECKING:
    from controlplane.kv_cache import KVCacheManager

__all__ = ["BatchScheduling", "fusing_batchers"]

_SCHEDULABLE = (WorkerState.READY, WorkerState.DRAINING)
_WAITING, _RUNNING = RequestStatus.WAITING, RequestStatus.RUNNING
_DRAINING = WorkerState.DRAINING
# A wake's time as the driver's clock reads it may fall an ulp before the time asked for (now + (at - now))
_WAKE_SLACK_S = 1e-9


def fusing_batchers(plugins: Any, own: frozenset[str]) -> frozenset[str]:
    """The makers (as `PolicyCalls.decide` names them) whose plans of several iterations a multi-iteration driver
    (the simulator's fast mode) may run as one step: those asked before them, if any, are all the project's own
    (``own``: `PolicyCalls.own_plugins`), whose answers stay the same while nothing changes. Behind another plugin
    that deferred, raised or planned unusably, a plan runs one iteration, and that plugin is asked at the next, as
    the exact mode asks it at every iteration. A wrapper of ``cp_form_batch`` that is not the project's own is asked
    at every call: then no plan runs several iterations."""
    impls = plugins.hook.cp_form_batch.get_hookimpls()  # (pluggy's order: the last is asked first)
    if any((i.hookwrapper or getattr(i, "wrapper", False)) and i.plugin_name not in own for i in impls):
        return frozenset()
    names = set()
    for impl in reversed(impls):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        names.add(impl.plugin_name)
        if impl.plugin_name not in own:
            return frozenset(names)  # those after it are asked only when it does not answer
    return frozenset(names | {n for n in own if n.endswith(" (fallback)")})


class BatchScheduling:
    """Batches in and out of the workers."""

    workers: dict[str, Worker]
    kv: KVCacheManager
    _batches: dict[str, Batch]
    _interrupted: set[str]
    _out: list[Any]
    _fusing: frozenset[str]

    def _schedule(self, w: Worker) -> None:
        """Ask the batching policy for the idle worker's next batch and start it."""
        while not w.busy and w.state in _SCHEDULABLE and (w.waiting or w.running):
            plan: BatchPlan
            plan, plugin = self._decide("cp_form_batch", w)
            if plan is None:
                plan = BatchPlan()
            elif plugin not in self.calls.own_plugins and plan_error(plan, w) is not None:  # the built-in decides
                plan, plugin = replacement_plan(self.calls, plan, plugin, w)
            if plan.preempt:
                why = plan.reason or "preempted by the batching plan"
                for r in plan.preempt:
                    self._preempt(w, r, plugin, why)
            expired = 0
            for r, why in plan.expire:  # waited too long: refused rather than served late
                if r in w.waiting and r not in plan.preempt:
                    w.waiting.remove(r)
                    expired += 1
                    self._reject(r, why, plugin, "cp_form_batch", ReasonCode.QUEUE_TIMEOUT)
            if plan.prefill or plan.decode:
                self._start_batch(w, plan, plugin)
                return
            if plan.wake_after_s is not None:
                self._out.append(act.WakeWorker(w.worker_id, self.clock.now_s + plan.wake_after_s))
                return
            if plan.preempt or expired:
                continue  # memory was freed, or the queue changed: plan again
            if w.running:
                self._stalled(w, plugin, plan.reason)
                continue  # nothing runs now: plan again for those waiting, as after a rejection below
            # Nothing runs and nothing can start: the head request can never fit this worker.
            head = w.waiting.popleft()
            # (the worker after the reason: the summary counts rejections by the text before the first colon,
            # one row for the cause, not one per worker)
            self._reject(head, f"does not fit its worker: {plan.reason or 'batching returned nothing'} "
                         f"(worker {w.worker_id})",
                         plugin, "cp_form_batch", ReasonCode.DOES_NOT_FIT)
        if w.state is _DRAINING and not w.busy and not w.waiting and not w.running:
            self._out.append(act.StopWorker(w.worker_id))

    def _stalled(self, w: Worker, plugin: str | None, reason: str) -> None:
        """Running requests but an empty batch: fail them rather than hang forever. The empty plan is ``plugin``'s
        error, recorded and counted as an unusable plan is (`batch_plan_checks.replacement_plan`). Each failure's
        reason starts with its kind, the same for every worker and plugin (the summary counts failures by the text
        before the first colon), the specifics after it."""
        n = len(w.running)
        wid = w.worker_id
        why = reason or "an empty plan"
        if plugin is not None:
            self.calls.monitor.record(plugin, "cp_form_batch", ValueError(
                f"an empty BatchPlan for worker {wid} while {n} requests run there (failed as stalled): {why}"), wid)
            self.calls.drain_errors(wid)
        for r in list(w.running):
            w.running.remove(r)
            self._fail(r, f"batching policy stalled: {plugin or 'nobody'} planned no batch on worker {wid} with {n} "
                          f"running: {why}", ReasonCode.STALLED)
        self.kv.recount(w)

    def _start_batch(self, w: Worker, plan: BatchPlan, plugin: str | None) -> None:
        now = self.clock.now_s
        wid = w.worker_id
        prefill = plan.prefill
        prefill_tokens = 0
        waiting_, running = w.waiting, w.running
        joined: list[Request] | None = []  # new to the running set (None: a running one's context changed)
        for i, (r, n) in enumerate(prefill):  # another plugin's plan was checked by `plan_error`; the project's own:
            if r.worker_id != wid or n <= 0 or n > r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens:
                raise RuntimeError(f"the built-in batching {plugin} planned an invalid prefill of {n} tokens for "
                                   f"{r.request_id}")
            queued = r.status is _WAITING
            if queued:  # out of the queue before a prefix hit changes its progress (the queue keeps totals of it)
                if waiting_[0] is r:
                    waiting_.popleft()
                else:
                    waiting_.remove(r)
            if r.hash_ids and r.num_computed_tokens == 0:
                if not queued:
                    joined = None
                cached = self.kv.prefix_hit(w, r)
                if cached:  # the prefill computes only what the prefix cache lacks
                    n = min(n, r.remaining_prefill_tokens)
                    prefill = prefill[:i] + ((r, n),) + prefill[i + 1:]
            prefill_tokens += n
            if queued:
                r.status = _RUNNING
                running.append(r)
                if joined is not None:
                    joined.append(r)
                if r.scheduled_s is None:
                    r.scheduled_s = now
        iterations, then_decode = 1, ()
        if plan.max_iterations > 1 and self._multi_iteration and plugin in self._fusing:
            iterations, then_decode = plan_iterations(plan, prefill, running)
            if iterations > 1 and plugin not in self.calls.own_plugins:  # (the built-ins stop where KV runs out)
                iterations = iterations_in_kv(w, prefill, plan.decode, iterations)
                if iterations == 1:
                    then_decode = ()
        batch_id = self.ctx.ids.next("batch")
        batch = Batch(batch_id, wid, prefill, plan.decode, iterations, then_decode)
        w.busy = True
        w.current_batch_id = batch_id
        self._batches[wid] = batch
        self._interrupted.discard(wid)
        if prefill:  # a decode-only batch holds what the last recount found
            self.kv.batch_started(w, joined, prefill_tokens)
        if self._record_batches:
            self._emit(Decision(
                now, "cp_form_batch", plugin or "core", "batch", wid, plan.reason or None,
                {"batch": batch_id, "prefill": len(plan.prefill), "prefill_tokens": prefill_tokens,
                 "decode": len(plan.decode), "iterations": iterations, "then_decode": len(then_decode)},
            ))
        self._out.append(act.StartBatch(batch))
        if plan.wake_after_s is not None and iterations > 1:
            self._ask_again_at(wid, batch_id, now + plan.wake_after_s)

    def _ask_again_at(self, wid: str, batch_id: int, at_s: float) -> None:
        """A batch of several iterations whose plan says when to ask again (`BatchPlan.wake_after_s`): the driver
        wakes the worker at ``at_s`` and the batch stops at its first iteration boundary at or after it
        (`_on_wake`), where the policy is asked, as the exact mode (one iteration a batch) asks it at every
        boundary. Kept by worker: the batch it bounds (a later batch is not stopped by this wake) and when."""
        bounds = self.__dict__.get("_wake_bounds")  # (a mixin's optional state: a plain attribute)
        if bounds is None:
            bounds = self.__dict__["_wake_bounds"] = {}
        bounds[wid] = (batch_id, at_s)
        self._out.append(act.WakeWorker(wid, at_s))

    def _preempt(self, w: Worker, r: Request, plugin: str | None, reason: str) -> None:
        """Evict running ``r`` (it recomputes later): ``plugin``'s plan asked for it, with its ``reason`` (the
        built-in batching's: the KV cache full), or the core did (None: its batch failed)."""
        if r not in w.running:
            return
        w.running.remove(r)
        r.num_preemptions += 1
        self.stats.num_preemptions += 1
        self.kv.drop(r)
        r.status = RequestStatus.WAITING
        w.waiting.appendleft(r)
        self._decision("cp_form_batch", plugin, "preempt", r.request_id, reason, {"worker": w.worker_id})
        self._out.append(act.PreemptRequest(w.worker_id, r.request_id))
        self.kv.recount(w)

    def settle_batch(self, e: ev.BatchFinished) -> None:
        """At a run's cutoff (the simulator's ``--until``, a Ctrl-C's stop): the iterations of the worker's running
        batch finished by then (``e.num_iterations``) applied as a batch that ended at ``e.time_s`` (tokens, first
        tokens, busy time), with no next batch planned: nothing runs after the cutoff. So a multi-iteration batch
        cut by the cutoff leaves what the exact mode's one-iteration batches leave."""
        self.clock.now_s = e.time_s
        self._out = []
        self._on_batch_finished(e, plan_next=False)
        self._out = []

    def _on_batch_finished(self, e: ev.BatchFinished, plan_next: bool = True) -> None:
        w = self.workers.get(e.worker_id)
        batch = self._batches.get(e.worker_id)
        if w is None or batch is None or batch.batch_id != e.batch_id:
            return  # a stale report from a worker that failed or was replaced
        del self._batches[e.worker_id]
        w.busy = False
        w.current_batch_id = None
        k = e.num_iterations
        now = self.clock.now_s
        if k < batch.max_iterations and self._record_batches:  # cut short (an interrupt, a run's cutoff): what ran
            self._emit(Decision(now, "cp_form_batch", "core", "batch_cut", e.worker_id,
                                f"ran {k} of the {batch.max_iterations} iterations planned",
                                {"batch": batch.batch_id, "iterations": k}))
        busy_s = e.busy_s
        if busy_s is not None:
            w.busy_s += busy_s
            costs = self.stats.batch_costs  # None until the run's first response-cache hit: a run without one pays nothing
            if costs is not None:  # each iteration's tokens and busy GPU-seconds (`controlplane.batch_costs`)
                self._add_costs(costs, batch, e, k)
        finished_by_worker = dict(e.finished) if e.finished else None
        first_end = e.first_end_s if k > 1 and e.first_end_s is not None else now
        prefilled, done = advance_batch(batch, k, first_end)
        for r in prefilled:
            if r.hash_ids:
                self.kv.prefix_store(w, r)
        if finished_by_worker:
            for r in w.running:
                if r.request_id in finished_by_worker and r not in done:
                    done.append(r)
        # Prefills only, one iteration (while a burst queues, most batches; hundreds may be running):
        # count the KV blocks they changed rather than every running request's.
        counted = k == 1 and not batch.decode and not finished_by_worker and not self._cancelling
        if counted:
            self.kv.prefill_finished(w, batch.prefill, done)
        for r in done:
            w.running.remove(r)
            w.num_completed += 1
            r.output_tokens = min(r.output_tokens, r.max_output_tokens)
            if finished_by_worker and r.request_id in finished_by_worker:
                r.reason = finished_by_worker[r.request_id]
            self._complete(r)
        if self._cancelling:
            self._apply_cancellations(w)
            counted = False  # cancelled running requests left: count them all
        if not counted:
            self.kv.recount(w)
        if plan_next:
            self._schedule(w)

    def _add_costs(self, costs, batch: Batch, e: ev.BatchFinished, k: int) -> None:
        """The ``k`` iterations ``batch`` ran, each an observation of the batch-cost fit, as the exact mode's
        one-iteration batches give them: with a prefill, its first (``e.first_end_s`` splits the busy time) and the
        decodes of ``then_decode`` after it; decode-only, ``k`` alike."""
        gpus = self._deployments[self.workers[e.worker_id].model].gpus_per_replica
        y = e.busy_s * gpus
        before, y_before = costs.excluded(e.worker_id, batch.batch_id)
        if before:  # it ran as the fit began: only its iterations after count, every one a decode of the same requests
            if k > before:
                n = len(batch.then_decode if batch.prefill else batch.decode)
                costs.add(0, n, y - y_before * gpus, k - before - 1, n, 0.0)
            return
        if not batch.prefill:
            n = len(batch.decode)
            costs.add(0, n, y, k - 1, n, 0.0)  # (every iteration alike: the split of the seconds does not matter)
            return
        p = sum(n for _, n in batch.prefill)
        if k == 1 or e.first_end_s is None:
            costs.add(p, len(batch.decode), y)
            return
        later_y = (e.time_s - e.first_end_s) * gpus  # the decodes after the prefill iteration
        costs.add(p, len(batch.decode), y - later_y, k - 1, len(batch.then_decode), later_y)

    def _start_costs(self, costs) -> None:
        """The batch-cost fit begins now (the run's first response-cache hit): the iterations of the batches running
        now that finished before are left out of it (`BatchCosts.exclude`); in the simulator's fast mode a batch runs
        many iterations and is applied at its end, and the exact mode fitted only the iterations after this."""
        costs.started = True
        for wid, batch in self._batches.items():
            w = self.workers.get(wid)
            done = self.ctx.batch_now(w) if w is not None else None
            if done is not None and done[0] is batch:
                costs.exclude(wid, batch.batch_id, done[1], done[2])

    def _on_batch_failed(self, e: ev.BatchFailed) -> None:
        w = self.workers.get(e.worker_id)
        batch = self._batches.pop(e.worker_id, None)
        if w is None or batch is None or batch.batch_id != e.batch_id:
            return
        w.busy = False
        w.current_batch_id = None
        self._decision("core", "core", "batch_failed", e.worker_id, e.reason, {"batch": e.batch_id})
        why = "batch failed: recompute later"
        for r, _ in batch.prefill:
            self._preempt(w, r, None, why)
        for r in batch.decode:
            self._preempt(w, r, None, why)
        for r in batch.then_decode:
            self._preempt(w, r, None, why)
        if e.out_of_memory:
            self._plan_memory(w, "out_of_memory")
        if self._cancelling:
            self._apply_cancellations(w)
        self._schedule(w)

    def _on_wake(self, e: ev.WorkerWake) -> None:
        """A wake the batching policy asked for: an idle worker plans again; one running the batch whose plan asked
        for this wake (`_ask_again_at`) stops it at its next iteration boundary, then plans."""
        wid = e.worker_id
        w = self.workers.get(wid)
        if w is None:
            return
        bounds = self.__dict__.get("_wake_bounds")
        bound = bounds.get(wid) if bounds else None
        if bound is not None:
            batch = self._batches.get(wid)
            if batch is not None and batch.batch_id == bound[0] and e.time_s >= bound[1] - _WAKE_SLACK_S:
                del bounds[wid]
                if wid not in self._interrupted:
                    self._interrupted.add(wid)
                    self._out.append(act.InterruptBatch(wid))
                return
        self._schedule(w)
