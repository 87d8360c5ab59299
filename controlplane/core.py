"""The control plane: a sans-I/O state machine from events to actions.

Drivers (the SimPy simulator, the live daemon) feed events stamped with run time into
`ControlPlane.handle` and carry out the actions it returns. The core keeps requests and
workers, asks the plugins' policy hooks for every decision, records each decision with its
reason on the event bus, and never reads a clock, sleeps or does I/O itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.config import RunConfig
from controlplane.batch_scheduling import BatchScheduling, fusing_batchers
from controlplane.context import Clock, PolicyContext, RunInfo
from controlplane.cancellations import Cancellations
from controlplane.control_loop import ControlLoop
from controlplane.decisions import Admission, RouteDecision
from controlplane.errors import did_you_mean
from controlplane.kv_cache import KVCacheManager
from controlplane.metrics import RunStats
from controlplane.model_stats import ModelStats
from controlplane.plugin_manager import PluginSet
from controlplane.policy_calls import PolicyCalls
from controlplane.responses import Responses
from controlplane.request_latency import latencies as request_latency
from controlplane.scaling import RecentLatencies
from controlplane.types import Batch, Decision, ReasonCode, Request, RequestStatus, Worker, WorkerState
from controlplane.worker_lifecycle import WorkerLifecycle

_WAITING = RequestStatus.WAITING
# Enum members as module globals: `RequestStatus.X` goes through the enum's metaclass (~5x a global's read).
_COMPLETED, _REJECTED, _FAILED, _IN_FLIGHT = (RequestStatus.COMPLETED, RequestStatus.REJECTED, RequestStatus.FAILED,
                                             RequestStatus.IN_FLIGHT)
_ACCEPTING = frozenset((WorkerState.READY, WorkerState.STARTING))  # Worker.accepts_requests


class ControlPlane(Responses, Cancellations, WorkerLifecycle, ControlLoop, BatchScheduling):
    """One run's control plane. Not thread-safe: one driver feeds it events in time order."""

    # `__init__`'s and `bind_plugins`' attributes as slots: past 29 beside an instance CPython 3.11 specializes no
    # `self.method` lookup (~300 instructions a call). Mixins' optional state (`_unplaced_until`) stays in attributes.
    __slots__ = (
        "config", "clock", "plugins", "workers", "_routable", "unrouted", "active", "guardian_pending", "_unverified",
        "_checks", "_blocked_answers", "stats", "gauges", "ctx", "_batches", "_interrupted", "_cancelling",
        "_worker_alive_since", "_out", "_deployments", "_default_model", "_arrivals_since_tick", "_recent", "_tick_s",
        "_arrivals_since_sample",
        "_metrics_interval_s", "_configured_replicas", "_queue_gauges", "_last_sample_s", "_record_batches",
        "_multi_iteration", "kv", "calls", "_monitor", "_emit", "_decide", "_handlers", "finish_actions",
        "_steady_scale", "_fixed_replicas_only", "_by_model", "_fusing",
    )

    def __init__(
        self,
        *,
        config: RunConfig,
        plugins: PluginSet,
        clock: Clock,
        run: RunInfo,
        fallbacks: Mapping[str, object],
        multi_iteration: bool = False,
    ) -> None:
        """``multi_iteration``: the driver can run a batch for several iterations (`Batch.max_iterations`)
        and stop it early on `InterruptBatch`; otherwise every batch is one iteration."""
        self.config = config
        self.clock = clock
        self.plugins = plugins
        self.workers: dict[str, Worker] = {}
        self._routable: dict[str | None, tuple[Worker, ...]] | None = None  # see _routable_workers
        self.unrouted: deque[Request] = deque()  # admitted, waiting for a worker of their model
        self.active: dict[str, Request] = {}  # every request in the system, by id
        self.guardian_pending: dict[str, Request] = {}  # sync checks: the reply waits for them
        self._unverified: dict[str, Request] = {}  # answered, async check pending: not cacheable yet
        self._checks: dict = {}  # (request id, stage) -> guardian checks in flight (Responses)
        self._blocked_answers: dict = {}  # (model, prompt) a guardian blocked: never served from a cache
        self.stats = RunStats()
        self._by_model = ModelStats.for_run(config)  # (several models: each one's figures, the summary's by_model)
        self.gauges: dict[str, float] = {}
        self.ctx = PolicyContext(clock=clock, rng_seed=config.seed, config=config, run=run, workers=self.workers,
                                 metrics=self.gauges)
        self._batches: dict[str, Batch] = {}
        self._interrupted: set[str] = set()
        # Requests in a running batch that leave at its next boundary: id -> (reason, None to cancel
        # or the code to fail it with).
        self._cancelling: dict[str, tuple[str, ReasonCode | None]] = {}
        self._worker_alive_since: dict[str, float] = {}
        self._out: list[Any] = []
        self._deployments = {m.name: m for m in config.cluster.models}
        self._default_model = config.cluster.models[0].name
        self._arrivals_since_tick = dict.fromkeys(self._deployments, 0)
        self._arrivals_since_sample = dict.fromkeys(self._deployments, 0)  # the stored arrival rate's counts
        self._recent = {m: RecentLatencies(config.control.latency_window_s) for m in self._deployments}
        # What every tick reads, as plain values (see `ControlLoop`): not a pydantic model's attributes.
        self._tick_s, self._metrics_interval_s = config.control.tick_s, config.control.metrics_interval_s
        self._configured_replicas = {m: d.replicas for m, d in self._deployments.items()}
        self._queue_gauges = {m: "queue:" + m for m in self._deployments}
        # ctx.metrics holds its gauges from the start (each tick sets them again, `ControlLoop._on_tick`): a policy
        # asked before the first tick (routing the first second's requests) reads 0, not a KeyError
        self.gauges.update(dict.fromkeys(self._queue_gauges.values(), 0), arrivals_per_s=0.0)
        self._last_sample_s = float("-inf")
        self._record_batches = config.storage.record_batches
        self._multi_iteration = multi_iteration
        self.finish_actions = True  # a `FinishRequest` as each request leaves (a driver with no clients: False)
        self.kv = KVCacheManager(None)
        self.bind_plugins(plugins, fallbacks)
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.IterationTimed: self._emit,
            ev.RequestArrived: self._on_arrival,
            ev.RequestCancelled: self._on_cancel,
            ev.RequestFailed: self._on_request_failed,
            ev.BatchFinished: self._on_batch_finished,
            ev.BatchFailed: self._on_batch_failed,
            ev.WorkerPlaced: self._on_worker_placed,
            ev.WorkerReady: self._on_worker_ready,
            ev.WorkerFailed: self._on_worker_failed,
            ev.WorkerStopped: self._on_worker_stopped,
            ev.WorkerWake: self._on_wake,
            ev.GuardianFinished: self._on_guardian_finished,
            ev.Tick: self._on_tick,
        }
        missing = [t.__name__ for t in ev.INBOUND_EVENTS if t not in self._handlers]
        if missing:
            raise TypeError(f"the control plane has no handler for {', '.join(missing)}")

    def bind_plugins(self, plugins: PluginSet, fallbacks: Mapping[str, object]) -> None:
        """Use this plugin set from now on (the daemon's config reload swaps it at run time)."""
        self.plugins = plugins
        self.calls = PolicyCalls(plugins, fallbacks, self.ctx, self.clock)
        old = getattr(self, "_monitor", None)
        if old is not None and old is not plugins.monitor:  # a reload: the run's error counts go on
            monitor = plugins.monitor
            monitor.num_errors += old.num_errors
            for key, n in old.error_counts.items():
                monitor.error_counts[key] = monitor.error_counts.get(key, 0) + n
        self._monitor = plugins.monitor
        self._emit = self.calls.emit
        self._decide = self.calls.decide
        self._steady_scale = {} if "cp_scale" in self.calls.single_answer else None  # see ControlLoop._on_tick
        # whether `fixed-replicas` (or none) is the only autoscaler: then a model with no replica never gets one
        self._fixed_replicas_only = all(p.info.name == "fixed-replicas" for p in plugins.loaded
                                        if "cp_scale" in p.info.hooks)
        self.kv.bind(self.calls)
        self._fusing = fusing_batchers(plugins, self.calls.own_plugins)  # whose plans may run several iterations
        if getattr(self, "_handlers", None) is not None:  # a reload: iteration timings go to the new set's observers
            self._handlers[ev.IterationTimed] = self._emit

    # --- public API ---------------------------------------------------------------------------

    def start(self, *, warm: bool = False, confirms_placement: bool = False) -> list[Any]:
        """Start the initial replicas of every model; returns the actions. ``warm``: the driver makes them ready
        as the run starts (the simulator's are warm), so nothing expects their cold start. ``confirms_placement``:
        the driver says when each replica it starts was placed (`WorkerLifecycle.confirms_placement`)."""
        self._out = []
        self.confirms_placement = confirms_placement
        self.plugins.hook.cp_run_started(ctx=self.ctx)
        self.calls.drain_errors()
        for m in self.config.cluster.models:
            for _ in range(m.replicas):
                self._add_worker(m.name, reason="initial replicas", warm=warm)
        return self._take()

    def handle(self, event: Any) -> list[Any]:
        """Apply one event at ``event.time_s``; returns the actions for the driver."""
        self.clock.now_s = event.time_s
        self._out = []
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"the control plane does not handle {type(event).__name__} events")
        handler(event)
        out, self._out = self._out, []
        return out

    def never_served(self) -> dict[str, str]:
        """Models configured with no replica, none alive, whose only autoscaler is `fixed-replicas` (it keeps
        the configured count, so never starts one): why, by model. Their requests are refused at arrival
        (``UNAVAILABLE``) rather than left waiting until the run ends or the client's timeout."""
        if not self._fixed_replicas_only:
            return {}  # another autoscaler may start one
        idle = {d.name for d in self.config.cluster.models if d.replicas == 0}
        if not idle:
            return {}
        idle -= {w.model for w in self.workers.values() if w.is_alive}
        return {model: "no worker is configured (replicas: 0) and the autoscaler fixed-replicas never starts one"
                for model in sorted(idle)}

    def finish(self) -> dict[str, Any]:
        """End the run: what is still in the system is recorded as in flight; returns the summary."""
        self._out = []
        now = self.clock.now_s
        self._closing_samples(now)  # (the time series' last, partial interval: every arrival counted)
        for r in list(self.active.values()):
            r.status = RequestStatus.IN_FLIGHT
            r.reason = r.reason or "still in the system when the run ended"
            self._finish(r, r.status)
        self._stop_at_run_end(now)  # each replica still alive: its GPU time, and a `stopped` event ("run ended")
        self.stats.num_plugin_errors = self._monitor.num_errors
        summary = self.stats.summary(now)
        # Per plugin and hook: only the first MAX_RECORDED_ERRORS of each become decisions, so `runs show`
        # reads the true counts here (only when a plugin raised: a clean run's summary is as before).
        if counts := self._monitor.counts_by_plugin():
            summary["plugin_error_counts"] = counts
        summary["sim_end_s"] = round(now, 9)
        if self._by_model is not None:
            summary["by_model"] = self._by_model.summary(now)
        # (what slo_attainment was measured against, beside it: the tables print them with it)
        summary["slo_targets"] = {k: v for k, v in self.config.slo.model_dump().items() if v is not None}
        self._add_cost(summary)
        self.plugins.hook.cp_run_finished(ctx=self.ctx, summary=summary)
        self.calls.drain_errors()
        if self._monitor.num_errors != summary["num_plugin_errors"]:  # cp_run_finished raised: counted too
            self.stats.num_plugin_errors = summary["num_plugin_errors"] = self._monitor.num_errors
            summary["plugin_error_counts"] = self._monitor.counts_by_plugin()
        return summary

    @property
    def num_active(self) -> int:
        return len(self.active)

    # --- plumbing -----------------------------------------------------------------------------

    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _decision(
        self, hook: str, plugin: str | None, action: str, subject: str | None, reason: str | None, payload=None
    ) -> None:
        self._emit(Decision(self.clock.now_s, hook, plugin or "core", action, subject, reason or None, payload))

    # --- requests -----------------------------------------------------------------------------

    def _on_arrival(self, e: ev.RequestArrived) -> None:
        r = e.request
        if r.max_output_tokens < 1:
            r.max_output_tokens = 1
        if r.prompt_tokens < 1:  # (a trace row of 0 prompt tokens: served as one, as the live replay submits it;
            r.prompt_tokens = 1  # a 0-token prefill no engine can run, and the core refuses a plan of one)
        if r.request_id in self.active:
            raise ValueError(f"request id {r.request_id!r} is already in the system (arriving at {r.arrival_s:g} s "
                             "while an earlier request with that id is in flight): request ids must be unique")
        if r.model is None:  # before anyone sees it: observers of RequestArrived read the model policies read
            r.model = self._default_model
        self.active[r.request_id] = r
        self.stats.on_arrival(r)
        self._emit(e)
        model = r.model
        if self._by_model is not None:
            self._by_model.on_arrival(r, model)
        deployment = self._deployments.get(model)
        if deployment is not None:
            self._arrivals_since_tick[model] += 1
        else:
            served = ", ".join(self._deployments)
            self._reject(r, f"unknown model: no deployment serves {model!r}{did_you_mean(model, self._deployments)} "
                            f"(served: {served})", "core", "cp_admit_request", ReasonCode.UNKNOWN_MODEL)
            return
        if deployment.max_model_len and r.prompt_tokens + r.max_output_tokens > deployment.max_model_len:
            self._reject(
                r,
                f"too long: prompt {r.prompt_tokens} + max_tokens {r.max_output_tokens} tokens > max_model_len "
                f"{deployment.max_model_len}: ask for fewer max_tokens or send a shorter prompt",
                "core",
                "cp_admit_request",
                ReasonCode.TOO_LONG,
            )
            return
        if self._fixed_replicas_only and deployment.replicas == 0 and (why := self.never_served().get(model)):
            self._reject(r, f"model {model!r} will never be served: {why}", "core", "cp_admit_request",
                         ReasonCode.UNAVAILABLE)
            return
        room = self.kv.room.get(model)
        if room is not None and r.prompt_tokens + r.max_output_tokens > room:
            self._reject(
                r,
                f"does not fit: prompt {r.prompt_tokens} + max_tokens {r.max_output_tokens} tokens need more KV cache "
                f"than any {model} replica holds ({room} tokens): ask for fewer max_tokens or send a shorter prompt",
                "core",
                "cp_admit_request",
                ReasonCode.DOES_NOT_FIT,
            )
            return
        admission: Admission
        admission, plugin = (None, None) if "cp_admit_request" in self.calls.unanswered else \
            self._decide("cp_admit_request", r)
        if admission is not None and not admission.admit:
            r.retry_after_s = admission.retry_after_s
            self._reject(r, admission.reason or "rejected by admission policy", plugin, "cp_admit_request",
                         admission.code)
            return
        if admission is not None and admission.priority is not None and admission.priority != r.priority:
            self._decision("cp_admit_request", plugin, "prioritize", r.request_id, admission.reason or None,
                           {"from": r.priority, "to": admission.priority})
            r.priority = admission.priority
        self._admitted(r)  # the prompt's guardian check, then the response cache or a worker

    def _routable_workers(self, model: str | None) -> tuple[Worker, ...] | None:
        """The workers of ``model`` that accept requests (ready or starting), in cluster order.

        Kept per model between worker changes (every change of the worker set or of a worker's
        state calls `_workers_changed`): routing runs once per request, and scanning every
        replica for it was a tenth of a 200-replica replay. A tuple: the routing policy gets it
        as it is (the hook's ``workers`` is a read-only sequence), not a copy per request."""
        routable = self._routable
        if routable is None:
            found: dict[str | None, list[Worker]] = {}
            for w in self.workers.values():
                if w.state in _ACCEPTING:
                    found.setdefault(w.model, []).append(w)
            routable = self._routable = {m: tuple(ws) for m, ws in found.items()}
        return routable.get(model)

    def _workers_changed(self) -> None:
        """A worker was added or removed, or its state changed: who accepts requests is found again."""
        self._routable = None
        if self._steady_scale:  # a scaler's steady answer holds until now
            self._steady_scale.clear()

    def _route(self, r: Request) -> None:
        routable = self._routable
        routable = routable.get(r.model) if routable is not None else self._routable_workers(r.model)
        if not routable:
            self._no_worker_for(r)  # waits for one, or refused when the model's last start failed
            return
        candidates = routable
        decision: RouteDecision
        decision, plugin = self._decide("cp_route_request", r, candidates)
        worker = self.workers.get(decision.worker_id) if decision is not None else None
        if worker is None or worker.model != r.model or worker.state not in _ACCEPTING:  # not a candidate
            decision, plugin, worker = self._route_instead(r, decision, plugin, candidates)
        payload = {"worker": worker.worker_id}
        if decision is not None and decision.scores and plugin != "core":
            payload["scores"] = decision.scores  # what chose it
        self._emit(Decision(self.clock.now_s, "cp_route_request", plugin or "core", "route", r.request_id,
                            (decision.reason or None) if decision else None, payload))  # as _decision, inlined
        self._enqueue(worker, r)

    def _route_instead(self, r: Request, decision: RouteDecision | None, plugin: str | None,
                       candidates: tuple[Worker, ...]) -> tuple[RouteDecision, str, Worker]:
        """Where ``r`` goes when its router chose no candidate (a worker that does not exist, serves another model
        or takes no requests), or nobody routed it: the answer is the router's error, and the built-in router
        (`least-loaded`, at its default settings) routes it instead, else the core sends it to the least loaded
        candidate. Returns (the route, who made it, its worker): its reason is its maker's, with the refused
        route after it, never the refused router's reason under another name."""
        least = min(candidates, key=lambda w: w.load)
        if decision is None:
            why = f"nobody routed {r.request_id}: no routing plugin answered and no built-in router is installed"
            self._emit(Decision(self.clock.now_s, "cp_route_request", "core", "error", r.request_id,
                                why + "; sent to the least loaded", None, True))
            return RouteDecision(least.worker_id, f"least loaded ({least.load} queued+running): nobody routed it"), \
                "core", least
        bad, router = decision.worker_id, plugin or "a router"
        found = self.workers.get(bad)
        detail = ("no such worker" if found is None else
                  f"it serves model {found.model!r}, not {r.model!r}" if found.model != r.model else
                  f"it is {found.state.value} and takes no requests")
        why = f"routed {r.request_id} to {bad!r}, which is not a candidate ({detail})"
        refused = f"{router} routed it to {bad!r}, refused: {detail}"
        instead = self.calls.decide_instead("cp_route_request", plugin, why, r, candidates)  # records the error
        if instead is not None:
            answer, by = instead
            worker = self.workers.get(answer.worker_id) if isinstance(answer, RouteDecision) else None
            if worker is not None and worker in candidates:
                return RouteDecision(worker.worker_id, f"{answer.reason or 'the built-in router'}; {refused}",
                                     answer.scores), by, worker
        else:  # the built-in router's own answer (or none is installed): its error, counted and recorded as any
            self._monitor.record(router, "cp_route_request", ValueError(why + "; sent to the least loaded"),
                                 r.request_id)
            self.calls.drain_errors()
        return RouteDecision(least.worker_id, f"least loaded ({least.load} queued+running); {refused}"), "core", least

    def _enqueue(self, w: Worker, r: Request) -> None:
        r.worker_id = w.worker_id
        r.status = _WAITING
        w.waiting.append(r)
        if w.busy:
            batch = self._batches.get(w.worker_id)
            if (
                batch is not None
                and batch.max_iterations > 1
                and w.worker_id not in self._interrupted
                and len(w.running) < w.max_num_seqs
            ):
                self._interrupted.add(w.worker_id)
                self._out.append(act.InterruptBatch(w.worker_id))
        else:
            self._schedule(w)

    def _reject(self, r: Request, reason: str, plugin: str | None, hook: str, code: ReasonCode) -> None:
        r.reason = reason
        r.reason_code = code
        self._decision(hook, plugin, "reject", r.request_id, reason, {"code": code.value})
        self._finish(r, RequestStatus.REJECTED)

    def _fail(self, r: Request, reason: str, code: ReasonCode) -> None:
        r.reason = reason
        r.reason_code = code
        self._decision("core", "core", "fail", r.request_id, reason, {"code": code.value})
        self._finish(r, RequestStatus.FAILED)

    def _finish(self, r: Request, status: RequestStatus, finish_s: float | None = None) -> None:
        r.status = status
        if r.finish_s is None and status is not _IN_FLIGHT:
            r.finish_s = finish_s if finish_s is not None else self.clock.now_s
        self.active.pop(r.request_id, None)
        if self._cancelling:
            self._cancelling.pop(r.request_id, None)
        latencies = (request_latency(r.arrival_s, r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens,
                                     r.reply_held)
                     if status is _COMPLETED else None)  # request_latencies(r), computed once
        self.stats.on_finished(r, self.config.slo, latencies)
        if r.cache_hit is not None and (costs := self.stats.batch_costs) is not None and not costs.started:
            self._start_costs(costs)  # the run's first response-cache hit: the batch-cost fit begins
        if self._by_model is not None:
            self._by_model.on_finished(r, self.config.slo, latencies)
        recent = self._recent.get(r.model)
        if recent is not None:
            if latencies is not None and r.first_token_s is not None:
                ttft, tpot, e2e, queue = latencies
                recent.add(r.finish_s, ttft, e2e, queue, tpot)
            elif status is _REJECTED or status is _FAILED:
                recent.add_error(self.clock.now_s)
        self._emit(ev.RequestFinished(self.clock.now_s, r))
        if self.finish_actions:
            self._out.append(act.FinishRequest(r))
