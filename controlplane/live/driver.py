"""The live driver: the control-plane core driven by asyncio, real workers and a wall clock.

It is the live twin of `sim/driver.py`. Requests come from `submit()` (the daemon's HTTP
handlers, a benchmark, a test), workers live in a `WorkerPool`, and ticks come from a timer.
Every event fed to the core is stamped with the run clock (`now_s`: ``time.monotonic()`` since
the start), this driver being the only place that reads a clock; every core call happens on the
driver's event loop (the core is not thread-safe) while model iterations run in worker threads,
processes or Ray actors.

Carrying out the core's actions (one handler per action type, checked by `dispatch_table`):

* ``StartBatch``: one iteration on the worker, planned and run by `BatchRunner`
  (`controlplane.live.batch_runner`: lazy registration with the backend, recomputation after a
  preemption, chunked prefill). The reply comes back as ``BatchFinished``, preceded by
  ``IterationTimed`` when the worker computed something: the batch's start and the reply's
  return on the run clock, and the backend's profile row (shape, its own time, padding).
* ``StartWorker`` / ``StopWorker``: the pool starts or stops a worker; ``WorkerReady`` carries
  the worker's real device facts.
* ``PreemptRequest``: the worker drops the request's KV at its next step (`BatchRunner`).
* ``FinishRequest``: the client's handle resolves with the request's final state and code.
* ``RunGuardian``: a guardian declared in ``guardians.models`` checks the prompt or the answer
  in workers of the same pool, its own or the generation workers (`controlplane.live.guardian_pool`);
  one not declared answers ``"unavailable"`` (never a made-up "pass"). A verdict after the reply
  is written to the request's row by the run's recorder (`controlplane.verdict_after_reply`, as in
  the simulator); a block mid-generation ends the client's answer (`controlplane.live.guardian_verdicts`);
  a clean end waits for the checks in flight. ``WakeWorker``: a timer feeds ``WorkerWake``.

A worker that dies is reported as ``WorkerFailed``; the core retries its requests elsewhere or fails them
with the reason. An out-of-memory iteration is reported as ``BatchFailed``. Every submitted request
resolves: completed, rejected, failed, timed out, or cut off at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.config import RunConfig
from controlplane.context import Clock
from controlplane.live import driver_admin
from controlplane.live.batch_runner import BatchRunner
from controlplane.live.core_refusals import record_refusal
from controlplane.live.driver_workers import LiveWorkers
from controlplane.live.event_log import EventLog
from controlplane.live.guardian_pool import GUARDIAN_UNAVAILABLE, LiveGuardians
from controlplane.live.http_errors import InvalidRequest, ModelNotFound, RequestError, ServiceUnavailable, check_stored
from controlplane.live.pool import WorkerPool, make_pool
from controlplane.live.prometheus import PrometheusExporter
from controlplane.live.results import CUT_OFF, LiveRequest, LiveRequestHandle, LiveResult, cut_off
from controlplane.live.served_model import ServedModel, load_served_model, served_lengths, worker_settings
from controlplane.live.worker_messages import describe_error
from controlplane.types import ReasonCode, Request, RequestStatus, WorkerState

log = logging.getLogger(__name__)

__all__ = ["GUARDIAN_UNAVAILABLE", "LiveDriver"]


class LiveDriver(LiveWorkers):
    """Runs one live run: the core, a worker pool, ticks and the requests' streams. (The run's
    recorder writes its rows from its own thread: the loop never waits for the database.)

    Use ``await driver.start()`` inside a running event loop, then ``submit`` / ``generate``, and
    ``await driver.close()`` (or ``async with LiveDriver(...) as driver``).
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        pool: WorkerPool | str = "thread",
        record: bool = True,
        extra_plugins: Iterable[object] = (),
        request_timeout_s: float | None = None,
        cpu_threads: int | None = None,
        exporter: PrometheusExporter | None = None,
        trace_read: Mapping[str, Any] | None = None,
        trace: str | None = None,
        trace_format: str | None = None,
    ) -> None:
        """``trace``, ``trace_format`` and ``trace_read``: a replayed trace's file, format and how it
        was read (``RunSession``'s: the run row's ``trace`` and ``trace_format``, and its config's
        ``trace_read``)."""
        self.config = config
        self.trace_read = trace_read
        self.trace, self.trace_format = trace, trace_format
        self.pool = make_pool(pool, cpu_threads=cpu_threads) if isinstance(pool, str) else pool
        self.record = record
        self.request_timeout_s = request_timeout_s
        self.journal: Any = None  # the daemon's journal of accepted requests (`storage.journal`), if any
        self.metrics = exporter if exporter is not None else PrometheusExporter()
        self._live: dict[str, LiveRequest] = {}
        self.guardians = LiveGuardians(config.guardians, self.pool, live=self._live, feed=self._feed, now_s=self.now_s)
        #: Plugins added to the run's own (the Prometheus exporter first, the log of its events); kept across reloads.
        self.extra_plugins: list[object] = [self.metrics, self.guardians.ledger, EventLog(), *extra_plugins]
        self.session: Any = None
        self.core: Any = None
        self.models: dict[str, ServedModel] = {}
        self.draining = False
        self.summary: dict[str, Any] | None = None
        self.num_core_errors = 0
        self.worker_facts: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0: float | None = None  # the run clock's start (`time.monotonic()`), set once the core starts
        self._last_s = 0.0
        self._failed_workers: set[str] = set()
        self.last_worker_failure: str | None = None  # "worker: reason" of the latest, for /readyz
        self._starting: dict[str, asyncio.Task] = {}
        self.batches = BatchRunner(self.pool, self._live, now_s=self.now_s, feed=self._feed,
                                   worker_failed=self._worker_failed, is_current=self._is_current,
                                   max_retries=config.cluster.max_retries)
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._started = False
        self._finished = False  # core.finish() ran: no more events
        self._closed = False
        self._handlers = act.dispatch_table({
            act.StartBatch: self._start_batch,
            act.InterruptBatch: _ignore,  # every batch runs one iteration: nothing to interrupt
            act.StartWorker: self._start_worker,
            act.StopWorker: self._stop_worker,
            act.PreemptRequest: self._preempt,
            act.RunGuardian: self.guardians.run,
            act.FinishRequest: self._finish_request,
            act.WakeWorker: self._wake,
        }, "LiveDriver")

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, wait_ready_s: float | None = None) -> None:
        """Build the run (plugins, recorder, core), start the initial workers and the ticks."""
        from controlplane.session import RunSession

        if self._started:
            raise RuntimeError("the driver is already started")
        self._loop = asyncio.get_running_loop()
        for d in self.config.cluster.models:
            settings = worker_settings(self.config, d.name)
            self.models[d.name] = await asyncio.to_thread(load_served_model, d.name, settings, d.max_model_len)
        self.pool.bind(self._loop, self._worker_failed)
        # Guardian workers start before the run clock does: what they read of it is 0 (`now_s`).
        await self.guardians.start(sum(m.replicas for m in self.config.cluster.models) or 1)
        try:
            self.session = await asyncio.to_thread(  # (its max_model_len the lengths served: the edge's too_long)
                RunSession, served_lengths(self.config, self.models), mode="live", clock=Clock(read=self.now_s),
                record=self.record, extra_plugins=self.extra_plugins, trace=self.trace, trace_format=self.trace_format,
                trace_read=self.trace_read)
        except BaseException:
            await self.guardians.close()  # their workers started: stop them
            raise
        self.core = self.session.core
        self.metrics.watch_storage(getattr(self.session, "recorder", None))
        self.metrics.watch_caches(lambda: self.session.plugins.loaded)
        self.guardians.attach(self.session)
        self._t0, self._last_s = time.monotonic(), 0.0
        self._started = True
        try:
            self._apply(self.core.start(confirms_placement=True))  # (a start recorded once placed: WorkerPlaced)
        except BaseException as exc:
            self._closed = True
            await self.guardians.close()
            await asyncio.to_thread(self.session.close, {"error": describe_error(exc)}, status="failed")
            raise
        self._background.append(self._loop.create_task(self._ticks(), name="cp-ticks"))
        if wait_ready_s:
            await self.wait_ready(wait_ready_s)

    async def __aenter__(self) -> LiveDriver:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.close(status="finished" if exc_type is None else "failed")

    @property
    def run_id(self) -> int | None:
        return self.session.run_id if self.session is not None else None

    @property
    def ready(self) -> bool:
        """At least one worker is ready and the driver is not draining."""
        return (
            self._started and not self._closed and not self.draining
            and any(w.state is WorkerState.READY for w in self.core.workers.values())
        )

    @property
    def num_pending(self) -> int:
        """Submitted requests whose client has not had its final answer yet."""
        return sum(1 for lr in self._live.values() if lr.result is None)

    async def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Wait until a worker is ready and the driver takes requests (else TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker became ready in {timeout_s:.0f}s")
            await asyncio.sleep(0.05)

    def begin_drain(self) -> None:
        """Stop taking requests (readiness goes false, ``submit`` raises `ServiceUnavailable`). The ticks go on
        (scale-downs too), but a scale-up starts no worker (`LiveWorkers._start_worker`)."""
        self.draining = True
        self.metrics.draining.set(1)

    def resume(self) -> None:
        """Take requests again after `begin_drain`."""
        self.draining = False
        self.metrics.draining.set(0)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests and wait for the pending ones, then for the guardian checks still
        running (an async check's verdict, or its ``timeout``, reaches the request's row); True when
        none is left (answered, and off the workers: a timed-out request leaves its batch at the
        next iteration)."""
        self.begin_drain()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.num_pending or self.core.num_active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return await self.guardians.settle(None if deadline is None else max(0.0, deadline - time.monotonic()))

    async def close(self, status: str = "finished", *,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """End the run: stop workers, record the summary (with the fields ``extra`` adds); unfinished
        requests answer 503. A clean end (status ``finished``) first waits for the guardian checks in
        flight (each within its guardian's ``timeout_s``), so no async verdict is left ``pending``."""
        if self._closed or not self._started:
            return self.summary
        self._closed = True
        self.draining = True
        if status == "finished" and self.guardians.checks_in_flight:
            log.info("waiting for %d guardian checks in flight", self.guardians.checks_in_flight)
            await self.guardians.settle()
        for t in self._background:
            t.cancel()
        for t in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.core.num_active == 0:
            # Nothing left to re-route: stop the workers through the core so their stop is recorded (one still
            # loading is stopped too: its start ends, `_settle_starts`).
            for wid, w in list(self.core.workers.items()):
                if w.is_alive:
                    with contextlib.suppress(Exception):
                        await self.pool.stop(wid)
                    self._feed(ev.WorkerStopped(self.now_s(), wid))
        self.session.clock.now_s = self.now_s()
        self._finished = True
        cut_off(lr for lr in self._live.values() if lr.request.request_id in self.core.active)  # (answer_pending)
        try:
            summary = self.core.finish()
        except Exception as exc:
            log.exception("core.finish() failed")
            summary, status = {"error": describe_error(exc)}, "failed"
        self.answer_pending()
        self._live.clear()
        starts = set(self._starting.values())
        for t in list(self._tasks):
            if t not in starts:
                t.cancel()
        await self.guardians.close()
        with contextlib.suppress(Exception):
            await self.pool.close()
        await self._settle_starts()
        if self.guardians.declared and summary is not None:
            self.guardians.add_to(summary, self.config.cluster)  # busy and GPU seconds per guardian, and their cost
        if summary is not None and extra:
            summary = {**summary, **extra}
        self.summary = await asyncio.to_thread(self.session.close, summary, status=status)
        return self.summary

    # --- requests -------------------------------------------------------------------------------

    def model(self, name: str | None) -> ServedModel:
        """The deployment serving ``name`` (the first one for None); else `ModelNotFound`."""
        if name is None:
            return next(iter(self.models.values()))
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not served here; served: {', '.join(self.models)}", param="model")
        return served

    async def submit(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int = 16,
        model: str | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        ignore_eos: bool = False,
        tenant: str | None = None,
        priority: int = 0,
        chat: bool = False,
        request_id: str | None = None,
    ) -> LiveRequestHandle:
        """Submit a request (text or token ids); returns its handle at once. ``request_id`` (the
        library's, not the HTTP API's) names it in the run instead of ``req-N``: a trace replay keeps
        its trace's ids, so runs of the same trace pair request by request; it must be unique in the run.

        Raises `ServiceUnavailable` (draining / not running), `ModelNotFound` or `InvalidRequest` (all
        `RequestError`\\ s, with a code and an HTTP status); one the core would refuse too (an unknown model, a
        prompt over the context) is recorded as rejected first, its ``headers`` naming its ``x-request-id``.
        """
        if not self._started or self._closed:
            raise ServiceUnavailable("the control plane is not running")
        if self.draining:
            raise ServiceUnavailable("the daemon is draining: no new requests")
        check_stored(model=model, tenant=tenant, request_id=request_id, max_tokens=max_tokens, priority=priority)
        tenant = (tenant.strip() or None) if isinstance(tenant, str) else tenant  # (as traces and the API: " a " is a)
        try:
            served = self.model(model)
            p = served.prepare(prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                               seed=seed, stop=stop, ignore_eos=ignore_eos, chat=chat)
        except RequestError as exc:  # an unknown model or a prompt over the context: rejected, as the simulator does
            raise record_refusal(self, exc, model=model, prompt=prompt, max_tokens=max_tokens, tenant=tenant,
                                 priority=priority, request_id=request_id) from None
        now = self.now_s()
        if request_id is not None and request_id in self._live:
            raise InvalidRequest(f"request id {request_id!r} is in flight already", param="request_id")
        rid = request_id if request_id is not None else f"req-{self.core.ctx.ids.next('live-request')}"
        if self.journal is not None:  # before anything can happen to it: a crash can then name it
            self.journal.accepted(rid)
        request = Request(
            request_id=rid, arrival_s=now, prompt_tokens=len(p.ids), max_output_tokens=max_tokens,
            model=served.name, tenant=tenant, priority=priority, prompt=p.text, params=p.params,
            hash_ids=p.hash_ids, hash_block_tokens=p.hash_block_tokens,
        )
        lr = LiveRequest.of(request, p, max_tokens, self.config.plugins.settings)
        self._live[rid] = lr
        if self.request_timeout_s:
            lr.timer = self._loop.call_later(self.request_timeout_s, self._expire, rid)
        self._feed(ev.RequestArrived(now, request))
        return LiveRequestHandle(lr, self)

    def answer_pending(self, reason: str = CUT_OFF) -> int:
        """The daemon stops before these requests finish: each client still waiting gets its final answer now,
        ``in_flight`` (HTTP 503 ``unavailable``; a stream its error event and ``[DONE]``), while its handler still
        runs; the close stores them so (`results.cut_off`). Returns how many were answered."""
        answered = 0
        for lr in self._live.values():
            if lr.result is None:
                lr.resolve(lr.final("in_flight", reason, ReasonCode.UNAVAILABLE))
                self._answered(lr)
                answered += 1
        return answered

    def cancel(self, request_id: str, reason: str = "cancelled by the client",
               code: ReasonCode = ReasonCode.CLIENT_GONE) -> None:
        """The client gave up on ``request_id``: the core takes it off its worker (at the next
        iteration boundary if it is in a batch) and records it as cancelled, with ``code`` (its
        client went away, or `ReasonCode.TIMEOUT`) so that rows and metrics tell the two apart."""
        lr = self._live.get(request_id)
        if lr is not None and not self._finished:
            if lr.request.reason_code is None:  # the first cause stays (a timeout, then its client leaving)
                lr.request.reason_code = code
            self._feed(ev.RequestCancelled(self.now_s(), request_id, reason))

    async def generate(self, prompt: str | Sequence[int], **kwargs: Any) -> LiveResult:
        """Submit and wait for the final result."""
        return await (await self.submit(prompt, **kwargs)).result()

    def _expire(self, rid: str) -> None:
        lr = self._live.get(rid)
        if lr is not None and lr.result is None:
            reason = f"no answer within {self.request_timeout_s:g}s"
            lr.resolve(lr.final("timeout", reason, ReasonCode.TIMEOUT))
            self._answered(lr)
            self.cancel(rid, f"timed out: {reason}", ReasonCode.TIMEOUT)  # free its worker; recorded as cancelled

    # --- feeding the core -----------------------------------------------------------------------

    def now_s(self) -> float:
        """The run clock: seconds since the run started (monotonic, never going back). Every
        event this driver feeds the core is stamped with it. Before the start (guardian workers
        starting) it reads 0: the run has not begun, and nothing read then can hold the clock back."""
        if self._t0 is None:
            return 0.0
        now = time.monotonic() - self._t0
        if now < self._last_s:
            now = self._last_s
        self._last_s = now
        return now

    def _feed(self, event: Any) -> None:
        """Apply one event to the core and carry out its actions (on the loop thread only)."""
        if self._finished:
            return
        try:
            actions = self.core.handle(event)
        except Exception:
            self.num_core_errors += 1
            log.exception("the control plane failed on %s", type(event).__name__)
            return
        self._apply(actions)

    def _feed_later(self, delay_s: float, make: Any, *args: Any) -> None:
        """Feed ``make(now, *args)`` after ``delay_s`` (0: on the next loop turn, never re-entrantly)."""

        def fire() -> None:
            self._feed(make(self.now_s(), *args))

        if delay_s <= 0:
            self._loop.call_soon(fire)
        else:
            self._loop.call_later(delay_s, fire)

    def _apply(self, actions: list[Any]) -> None:
        for a in actions:
            self._handlers[type(a)](a)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("driver task %s failed", task.get_name(), exc_info=task.exception())

    async def _ticks(self) -> None:
        tick = self.config.control.tick_s
        due = self.now_s() + tick
        while True:
            await asyncio.sleep(max(0.0, due - self.now_s()))
            self._feed(ev.Tick(self.now_s()))
            due = max(due + tick, self.now_s())

    # --- batches (`controlplane.live.batch_runner`) ---------------------------------------------

    def _start_batch(self, a: act.StartBatch) -> None:
        step = self.batches.plan(a.batch)
        self._spawn(self.batches.run(step), f"cp-step-{step.worker_id}-{a.batch.batch_id}")

    def _preempt(self, a: act.PreemptRequest) -> None:
        self.batches.preempt(a.request_id)

    # --- replies, guardians, wake-ups -----------------------------------------------------------

    def _finish_request(self, a: act.FinishRequest) -> None:
        r = a.request
        lr = self._live.pop(r.request_id, None)
        if lr is None:
            return
        self.batches.release(lr)
        noted = lr.result is not None and lr.result.status == "timeout"  # by `_expire`
        status = r.status.value if r.status is not RequestStatus.IN_FLIGHT else "in_flight"
        if r.cache_hit and r.output_text:
            lr.push(r.output_text)
        # (an async prompt check that stopped it after it generated: withheld, content_filter, its code
        # `blocked` as on its row: `LiveRequest.final`)
        lr.resolve(lr.final(status, r.reason, r.reason_code))
        if not noted:
            self._answered(lr)

    def _answered(self, lr: LiveRequest) -> None:
        """Note in the journal that ``lr``'s client has its final answer: were the daemon killed before
        its row is written, the crashed run lists it as answered, not as safe to retry."""
        if self.journal is not None and lr.result is not None:
            self.journal.answered(lr.request.request_id, lr.result.status)

    def _wake(self, a: act.WakeWorker) -> None:
        self._feed_later(max(0.0, a.at_s - self.now_s()), ev.WorkerWake, a.worker_id)

    # --- admin (`controlplane.live.driver_admin`) -----------------------------------------------

    def reload(self, config: RunConfig) -> dict[str, Any]:
        """Swap in the plugins of ``config`` (same recorder and exporters); returns what changed.

        Only the ``plugins`` section takes effect at run time; changes to other sections are
        reported as needing a restart.
        """
        changed = driver_admin.swap_plugins(self.session, self.core, self.config, config, self.extra_plugins,
                                            self.now_s())
        self.config = self.config.model_copy(update={"plugins": config.plugins})
        return changed

    def plugin_listing(self) -> list[dict[str, Any]]:
        return driver_admin.plugin_listing(self.session.plugins)

    def worker_listing(self) -> list[dict[str, Any]]:
        return driver_admin.worker_listing(self.core, self.pool, self.worker_facts, self.guardians)


def _ignore(_a: Any) -> None:
    pass
