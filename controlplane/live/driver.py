"""The live driver: the control-plane core driven by asyncio, real workers and a wall clock.

It is the live twin of `sim/driver.py`. Requests come from `submit()` (the daemon's HTTP
handlers, a benchmark, a test), workers live in a `WorkerPool`, and ticks come from a timer.
Every event fed to the core is stamped ``time.monotonic() - start``, this driver being the only
place that reads a clock; every core call happens on the driver's event loop (the core is not
thread-safe) while model iterations run in worker threads, processes or Ray actors.

Carrying out the core's actions:

* ``StartBatch``: one iteration on the worker. Requests are registered with the worker's backend
  lazily, when a batch first prefills them there. A request prefilled again from token 0 (after a
  preemption or a worker failure) is registered again with its prompt plus the output already
  streamed, so the client's stream simply continues. A prompt the batching policy splits into
  chunks is prefilled by the backend at the first chunk; its first token is held back until the
  core schedules the last chunk. The result comes back as ``BatchFinished`` with one iteration
  (the core re-plans after each), the backend's finished requests and its measured busy time.
* ``StartWorker`` / ``StopWorker``: the pool starts or stops a worker; ``WorkerReady`` carries
  the worker's real device facts.
* ``FinishRequest``: the client's handle resolves with the request's final state.
* ``RunGuardian``: guardian models do not run live yet; the verdict fed back is
  ``"unavailable"`` (never a made-up "pass").
* ``WakeWorker``: a timer feeds ``WorkerWake``.

A worker that dies is reported as ``WorkerFailed``; the core retries its requests elsewhere or
fails them with the reason. An out-of-memory iteration is reported as ``BatchFailed``. Every
submitted request resolves: completed, rejected, failed, timed out, or cut off at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.config import RunConfig
from controlplane.context import Clock
from controlplane.errors import ConfigError
from controlplane.live.model_source import WorkerModelSettings, build_config
from controlplane.live.pool import (
    AddSpec,
    StepCommand,
    StepOutOfMemory,
    WorkerLost,
    WorkerPool,
    _describe,
    make_pool,
)
from controlplane.live.prometheus import PrometheusExporter
from controlplane.live.sampling import SamplingParams, StopCondition
from controlplane.types import Decision, Request, RequestStatus, WorkerState

log = logging.getLogger(__name__)

__all__ = [
    "GUARDIAN_UNAVAILABLE",
    "InvalidRequest",
    "LiveDriver",
    "LiveRequestHandle",
    "LiveResult",
    "ModelNotFound",
    "ServedModel",
    "ServiceUnavailable",
    "http_status_for",
]

#: The verdict fed back for guardian checks: guardian models do not run in live mode yet.
GUARDIAN_UNAVAILABLE = "unavailable"
#: Out-of-memory iterations in a row after which a worker is given up as failed.
MAX_OOM_STREAK = 8

_CLIENT_ERRORS = ("unknown model", "too long", "prompt too long", "does not fit")


class ServiceUnavailable(RuntimeError):
    """The driver is not running or is draining (HTTP 503)."""


class InvalidRequest(ValueError):
    """The request cannot be served as asked (HTTP 400)."""


class ModelNotFound(LookupError):
    """No deployment serves the requested model (HTTP 404)."""


def http_status_for(status: str, reason: str | None) -> int:
    """The HTTP status of a request's final state."""
    if status == "completed":
        return 200
    if status == "rejected":
        return 400 if reason and reason.startswith(_CLIENT_ERRORS) else 429
    if status == "timeout":
        return 504
    if status == "cancelled":
        return 499  # client closed the request (nginx's code; nobody is left to read it)
    return 503  # failed, or still in flight when the daemon stopped


@dataclass
class LiveResult:
    """A request's final state, as its client sees it. Times are run seconds (the core's clock)."""

    request_id: str
    model: str
    status: str  # completed | rejected | failed | in_flight | timeout | cancelled
    text: str
    finish_reason: str | None  # OpenAI style: "stop" | "length" (completed requests)
    reason: str | None  # why it was rejected or failed; the worker's stop reason when completed
    prompt_tokens: int
    completion_tokens: int
    worker_id: str | None = None
    num_retries: int = 0
    num_preemptions: int = 0
    cache_hit: str | None = None
    guardian_verdict: str | None = None
    arrival_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def http_status(self) -> int:
        return http_status_for(self.status, self.reason)


class _End:
    __slots__ = ("result",)

    def __init__(self, result: LiveResult) -> None:
        self.result = result


@dataclass(eq=False)
class _Live:
    """The driver's side of one request: what the backend needs and what the client is owed."""

    request: Request
    prompt_ids: tuple[int, ...]
    max_tokens: int
    stop: StopCondition
    sampling: SamplingParams
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    registered_on: str | None = None  # the worker whose backend holds the request
    backend_done: bool = False  # the backend retired it (finished)
    hold: bool = False  # prefilled at its first chunk; the core has not scheduled the last one yet
    held: Any = None  # the token that prefill produced, delivered with the last chunk
    result: LiveResult | None = None
    timer: asyncio.TimerHandle | None = None

    def push(self, delta: str) -> None:
        if self.result is None:
            self.queue.put_nowait(delta)

    def resolve(self, result: LiveResult) -> None:
        if self.result is not None:
            return
        self.result = result
        if self.timer is not None:
            self.timer.cancel()
        self.queue.put_nowait(_End(result))


class LiveRequestHandle:
    """A submitted request: ``async for delta in handle`` streams text; ``await handle.result()``;
    ``handle.cancel()`` when the client goes away."""

    def __init__(self, live: _Live, driver: LiveDriver | None = None) -> None:
        self._live = live
        self._driver = driver
        self.request_id = live.request.request_id
        self._result: LiveResult | None = None

    def cancel(self, reason: str = "cancelled by the client") -> None:
        """Give up on the request: it leaves its worker at the next iteration, recorded as cancelled."""
        if self._driver is not None and not self.done:
            self._driver.cancel(self.request_id, reason)

    @property
    def done(self) -> bool:
        return self._live.result is not None

    async def __aiter__(self) -> AsyncIterator[str]:
        while self._result is None:
            item = await self._live.queue.get()
            if isinstance(item, _End):
                self._result = item.result
                return
            yield item

    async def result(self) -> LiveResult:
        """Wait for the final state (deltas not yet read are part of its ``text``)."""
        async for _ in self:
            pass
        assert self._result is not None
        return self._result


@dataclass
class ServedModel:
    """A deployment as the driver sees it: worker settings and the tokenizer for requests."""

    name: str
    settings: WorkerModelSettings
    tokenizer: Any
    max_seq_len: int
    vocab_size: int

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
        """The prompt for a chat; True when it came from the tokenizer's chat template."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return text, True
        lines = [f"{m.get('role', 'user')}: {_content_text(m.get('content'))}" for m in messages]
        return "\n".join(lines) + "\nassistant:", False


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


def worker_settings(config: RunConfig, model: str) -> WorkerModelSettings:
    """The deployment's ``worker`` section as validated worker settings (default: tiny-llama)."""
    d = config.cluster.deployment(model)
    if d is None:
        raise ConfigError(f"no deployment named {model!r}")
    try:
        return WorkerModelSettings(**(d.worker or {}))
    except Exception as exc:
        raise ConfigError(f"cluster.models[{d.name}].worker: {exc}") from None


def load_served_model(name: str, settings: WorkerModelSettings) -> ServedModel:
    """Tokenizer and limits of a deployment's model, without loading its weights."""
    from controlplane.live import model_source

    if settings.path is not None:
        from transformers import AutoConfig

        try:
            cfg = AutoConfig.from_pretrained(settings.path, local_files_only=True)
        except OSError as exc:
            raise ConfigError(f"model {name}: cannot read a model config in {settings.path}: {exc}") from None
    else:
        cfg = build_config(settings)
    # The worker's own tokenizer choice (model_source has no public helper for it yet).
    tokenizer = model_source._load_tokenizer(settings.path, cfg)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    limit = getattr(text_cfg, "max_position_embeddings", None) or settings.max_seq_len
    return ServedModel(name, settings, tokenizer, min(settings.max_seq_len, int(limit)), int(text_cfg.vocab_size))


class LiveDriver:
    """Runs one live run: the core, a worker pool, ticks and the requests' streams.

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
        flush_interval_s: float = 2.0,
        exporter: PrometheusExporter | None = None,
    ) -> None:
        self.config = config
        self.pool = make_pool(pool, cpu_threads=cpu_threads) if isinstance(pool, str) else pool
        self.record = record
        self.request_timeout_s = request_timeout_s
        self.flush_interval_s = flush_interval_s
        self.metrics = exporter if exporter is not None else PrometheusExporter()
        self._extras = [self.metrics, *extra_plugins]
        self.session: Any = None
        self.core: Any = None
        self.models: dict[str, ServedModel] = {}
        self.draining = False
        self.summary: dict[str, Any] | None = None
        self.num_core_errors = 0
        self.worker_facts: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._last_s = 0.0
        self._live: dict[str, _Live] = {}
        self._pending_removes: dict[str, set[str]] = {}
        self._failed_workers: set[str] = set()
        self._starting: dict[str, asyncio.Task] = {}
        self._oom_streak: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._started = False
        self._finished = False  # core.finish() ran: no more events
        self._closed = False
        self._guardian_warned = False
        self._handlers = act.dispatch_table({
            act.StartBatch: self._start_batch,
            act.InterruptBatch: _ignore,  # every batch runs one iteration: nothing to interrupt
            act.StartWorker: self._start_worker,
            act.StopWorker: self._stop_worker,
            act.PreemptRequest: self._preempt,
            act.RunGuardian: self._run_guardian,
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
            self.models[d.name] = await asyncio.to_thread(load_served_model, d.name, settings)
        self.session = await asyncio.to_thread(
            RunSession, self.config, mode="live", clock=Clock(), record=self.record, extra_plugins=self._extras
        )
        self.core = self.session.core
        self.pool.bind(self._loop, self._on_pool_failure)
        self._t0 = time.monotonic()
        self._started = True
        try:
            self._apply(self.core.start())
        except BaseException as exc:
            self._closed = True
            await asyncio.to_thread(self.session.close, {"error": _describe(exc)}, status="failed")
            raise
        self._background.append(self._loop.create_task(self._ticks(), name="cp-ticks"))
        if self.session.recorder is not None and self.flush_interval_s:
            self._background.append(self._loop.create_task(self._flusher(), name="cp-flush"))
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
        """Stop taking requests (readiness goes false, ``submit`` raises `ServiceUnavailable`)."""
        self.draining = True
        self.metrics.draining.set(1)

    def resume(self) -> None:
        """Take requests again after `begin_drain`."""
        self.draining = False
        self.metrics.draining.set(0)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests and wait for the pending ones; True when none is left (answered,
        and off the workers: a timed-out request leaves its batch at the next iteration)."""
        self.begin_drain()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.num_pending or self.core.num_active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self, status: str = "finished") -> dict[str, Any] | None:
        """End the run: stop workers, record the summary; unfinished requests answer 503."""
        if self._closed or not self._started:
            return self.summary
        self._closed = True
        self.draining = True
        for t in self._background:
            t.cancel()
        for t in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.core.num_active == 0:
            # Nothing left to re-route: stop the workers through the core so their stop is recorded.
            for t in list(self._starting.values()):
                t.cancel()  # a worker still loading is not waited for
            for wid, w in list(self.core.workers.items()):
                if w.state in (WorkerState.READY, WorkerState.DRAINING, WorkerState.STARTING):
                    with contextlib.suppress(Exception):
                        await self.pool.stop(wid)
                    self._feed(ev.WorkerStopped(self._now(), wid))
        self.session.clock.now_s = self._now()
        self._finished = True
        try:
            summary = self.core.finish()
        except Exception as exc:
            log.exception("core.finish() failed")
            summary, status = {"error": _describe(exc)}, "failed"
        for lr in list(self._live.values()):
            lr.resolve(self._result(lr, "in_flight", "the daemon stopped before the request finished"))
        self._live.clear()
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.pool.close()
        self.summary = await asyncio.to_thread(self.session.close, summary, status=status)
        return self.summary

    # --- requests -------------------------------------------------------------------------------

    def model(self, name: str | None) -> ServedModel:
        if name is None:
            return next(iter(self.models.values()))
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not served here; served: {', '.join(self.models)}")
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
    ) -> LiveRequestHandle:
        """Submit a request (text or token ids); returns its handle at once.

        Raises `ServiceUnavailable` (draining / not running), `ModelNotFound` or `InvalidRequest`.
        """
        if not self._started or self._closed:
            raise ServiceUnavailable("the control plane is not running")
        if self.draining:
            raise ServiceUnavailable("the daemon is draining: no new requests")
        served = self.model(model)
        if isinstance(prompt, str):
            text: str | None = prompt
            ids = served.encode(prompt, special_tokens=not chat)
        else:
            text = None
            ids = [int(t) for t in prompt]
        if not ids:
            raise InvalidRequest("the prompt is empty")
        if any(not 0 <= t < served.vocab_size for t in ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {served.vocab_size})")
        if len(ids) >= served.max_seq_len:
            raise InvalidRequest(
                f"too long: the prompt has {len(ids)} tokens; the model's context is {served.max_seq_len}"
            )
        if max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        try:
            sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
            stop_cond = StopCondition(eos_token_ids=() if ignore_eos else None, stop_strings=stops)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
        if seed is not None:
            params["seed"] = seed
        if stops:
            params["stop"] = stops
        if ignore_eos:
            params["ignore_eos"] = True
        now = self._now()
        rid = f"req-{self.core.ctx.ids.next('live-request')}"
        request = Request(
            request_id=rid,
            arrival_s=now,
            prompt_tokens=len(ids),
            max_output_tokens=max_tokens,
            model=served.name,
            tenant=tenant,
            priority=priority,
            prompt=text,
            params=tuple(sorted(params.items())),
        )
        lr = _Live(request, tuple(ids), max_tokens, stop_cond, sampling)
        self._live[rid] = lr
        if self.request_timeout_s:
            lr.timer = self._loop.call_later(self.request_timeout_s, self._expire, rid)
        self._feed(ev.RequestArrived(now, request))
        return LiveRequestHandle(lr, self)

    def cancel(self, request_id: str, reason: str = "cancelled by the client") -> None:
        """The client gave up on ``request_id``: the core takes it off its worker (at the next
        iteration boundary if it is in a batch) and records it as cancelled."""
        if request_id in self._live and not self._finished:
            self._feed(ev.RequestCancelled(self._now(), request_id, reason))

    async def generate(self, prompt: str | Sequence[int], **kwargs: Any) -> LiveResult:
        """Submit and wait for the final result."""
        return await (await self.submit(prompt, **kwargs)).result()

    def _expire(self, rid: str) -> None:
        lr = self._live.get(rid)
        if lr is not None and lr.result is None:
            reason = f"no answer within {self.request_timeout_s:g}s"
            lr.resolve(self._result(lr, "timeout", reason))
            self.cancel(rid, f"timed out: {reason}")  # free its worker; recorded as cancelled

    def _result(self, lr: _Live, status: str, reason: str | None) -> LiveResult:
        r = lr.request
        finish = None
        if status == "completed":
            finish = "length" if (lr.finish_reason == "length" or len(lr.generated) >= lr.max_tokens) else "stop"
        text = lr.text
        completion = len(lr.generated)
        if r.cache_hit:
            text, completion = r.output_text or "", r.output_tokens
        return LiveResult(
            request_id=r.request_id, model=r.model or "", status=status, text=text, finish_reason=finish,
            reason=reason, prompt_tokens=r.prompt_tokens, completion_tokens=completion, worker_id=r.worker_id,
            num_retries=r.num_retries, num_preemptions=r.num_preemptions, cache_hit=r.cache_hit,
            guardian_verdict=r.guardian_verdict, arrival_s=r.arrival_s, first_token_s=r.first_token_s,
            finish_s=r.finish_s,
        )

    # --- feeding the core -----------------------------------------------------------------------

    def _now(self) -> float:
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
            self._feed(make(self._now(), *args))

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
        tick = self.config.sim.tick_s
        due = self._now() + tick
        while True:
            await asyncio.sleep(max(0.0, due - self._now()))
            self._feed(ev.Tick(self._now()))
            due = max(due + tick, self._now())

    async def _flusher(self) -> None:
        recorder = self.session.recorder
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await asyncio.to_thread(recorder.flush)
            except Exception:  # the recorder keeps what it could not write
                log.exception("flushing the run's rows failed")

    # --- actions --------------------------------------------------------------------------------

    def _start_batch(self, a: act.StartBatch) -> None:
        b = a.batch
        wid = b.worker_id
        removes = self._pending_removes.pop(wid, set())
        adds: list[AddSpec] = []
        prefill_ids: list[str] = []
        releases: list[_Live] = []
        for r, n in b.prefill:
            lr = self._live[r.request_id]
            final = r.num_computed_tokens + n >= r.prefill_target_tokens
            if r.num_computed_tokens == 0:
                if lr.registered_on == wid:
                    removes.add(r.request_id)  # KV from before a preemption: compute it again
                elif lr.registered_on is not None and self.pool.alive(lr.registered_on):
                    self._pending_removes.setdefault(lr.registered_on, set()).add(r.request_id)
                adds.append(
                    AddSpec(r.request_id, lr.prompt_ids, lr.max_tokens, lr.stop, lr.sampling, tuple(lr.generated))
                )
                lr.registered_on, lr.backend_done, lr.hold, lr.held = wid, False, not final, None
                prefill_ids.append(r.request_id)
            elif final:
                releases.append(lr)
        cmd = StepCommand(b.batch_id, tuple(prefill_ids), tuple(r.request_id for r in b.decode), tuple(adds),
                          tuple(removes))
        self._spawn(self._run_step(wid, b.batch_id, cmd, releases), f"cp-step-{wid}-{b.batch_id}")

    async def _run_step(self, wid: str, batch_id: int, cmd: StepCommand, releases: list[_Live]) -> None:
        outputs: tuple = ()
        busy_s = 0.0
        if cmd.prefill_ids or cmd.decode_ids or cmd.adds or cmd.removes:
            try:
                reply = await self.pool.step(wid, cmd)
            except StepOutOfMemory as exc:
                streak = self._oom_streak[wid] = self._oom_streak.get(wid, 0) + 1
                if streak >= MAX_OOM_STREAK:
                    self._worker_failed(wid, f"out of memory {streak} times in a row: {exc}")
                else:
                    self._feed(ev.BatchFailed(self._now(), wid, batch_id, f"out of memory: {exc}", out_of_memory=True))
                return
            except WorkerLost as exc:
                self._worker_failed(wid, str(exc))
                return
            except Exception as exc:
                log.exception("step on %s failed", wid)
                self._worker_failed(wid, f"step failed: {_describe(exc)}")
                return
            self._oom_streak.pop(wid, None)
            outputs, busy_s = reply.outputs, reply.duration_s
        else:
            await asyncio.sleep(0)  # middle prefill chunks only: no compute, but never re-entrant
        if wid in self._failed_workers or self._finished:
            return
        finished: list[tuple[str, str]] = []
        for out in outputs:
            lr = self._live.get(out.request_id)
            if lr is None:
                continue
            if lr.hold:
                lr.held = out
            else:
                self._deliver(lr, out, finished)
        for lr in releases:
            out, lr.held, lr.hold = lr.held, None, False
            if out is not None:
                self._deliver(lr, out, finished)
        self._feed(ev.BatchFinished(self._now(), wid, batch_id, 1, tuple(finished), busy_s=busy_s))

    def _deliver(self, lr: _Live, out: Any, finished: list[tuple[str, str]]) -> None:
        lr.generated.append(out.token_id)
        if out.text_delta:
            lr.text += out.text_delta
            lr.request.output_text = lr.text
            lr.push(out.text_delta)
        if out.finished:
            lr.backend_done = True
            lr.finish_reason = out.finish_reason
            lr.request.output_text = lr.text
            finished.append((out.request_id, out.finish_reason or "stop"))

    def _start_worker(self, a: act.StartWorker) -> None:
        task = self._spawn(self._run_start_worker(a.worker_id, a.model), f"cp-start-{a.worker_id}")
        self._starting[a.worker_id] = task

    async def _run_start_worker(self, wid: str, model: str) -> None:
        expected = sum(m.replicas for m in self.config.cluster.models) or 1
        try:
            facts = await self.pool.start(wid, self.models[model].settings, expected_workers=expected)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("worker %s could not start: %s", wid, exc)
            self._worker_failed(wid, f"could not start: {_describe(exc)}")
            return
        finally:
            self._starting.pop(wid, None)
        self.worker_facts[wid] = facts
        if self._closed:
            await self.pool.stop(wid)
            return
        log.info("worker %s ready: %s", wid, {k: facts.get(k) for k in ("device", "precision", "pid")})
        self._feed(ev.WorkerReady(self._now(), wid, memory=facts))

    def _stop_worker(self, a: act.StopWorker) -> None:
        self._spawn(self._run_stop_worker(a.worker_id), f"cp-stop-{a.worker_id}")

    async def _run_stop_worker(self, wid: str) -> None:
        starting = self._starting.get(wid)
        if starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait([starting])
        await self.pool.stop(wid)
        self._pending_removes.pop(wid, None)
        self._feed(ev.WorkerStopped(self._now(), wid))

    def _on_pool_failure(self, wid: str, reason: str) -> None:
        self._worker_failed(wid, reason)

    def _worker_failed(self, wid: str, reason: str) -> None:
        if wid in self._failed_workers or self._finished:
            return
        self._failed_workers.add(wid)
        self._pending_removes.pop(wid, None)
        for lr in self._live.values():
            if lr.registered_on == wid:
                lr.registered_on, lr.hold, lr.held = None, False, None
        self._feed(ev.WorkerFailed(self._now(), wid, reason))
        self._spawn(self.pool.stop(wid), f"cp-stop-{wid}")

    def _preempt(self, a: act.PreemptRequest) -> None:
        rid = a.request_id
        lr = self._live.get(rid)
        if lr is None or lr.registered_on is None:
            return
        if self.pool.alive(lr.registered_on):
            self._pending_removes.setdefault(lr.registered_on, set()).add(rid)
        lr.registered_on, lr.hold, lr.held = None, False, None

    def _run_guardian(self, a: act.RunGuardian) -> None:
        if not self._guardian_warned:
            self._guardian_warned = True
            log.warning("guardian %r asked for, but guardian models do not run live yet: verdict %r",
                        a.guardian, GUARDIAN_UNAVAILABLE)
        self._feed_later(0.0, ev.GuardianFinished, a.request.request_id, GUARDIAN_UNAVAILABLE)

    def _wake(self, a: act.WakeWorker) -> None:
        self._feed_later(max(0.0, a.at_s - self._now()), ev.WorkerWake, a.worker_id)

    def _finish_request(self, a: act.FinishRequest) -> None:
        r = a.request
        lr = self._live.pop(r.request_id, None)
        if lr is None:
            return
        if lr.registered_on is not None and not lr.backend_done and self.pool.alive(lr.registered_on):
            self._pending_removes.setdefault(lr.registered_on, set()).add(r.request_id)
        status = r.status.value if r.status is not RequestStatus.IN_FLIGHT else "in_flight"
        if r.cache_hit and r.output_text:
            lr.push(r.output_text)
        reason = r.reason
        lr.resolve(self._result(lr, status, reason))

    # --- admin ----------------------------------------------------------------------------------

    def reload(self, config: RunConfig) -> dict[str, Any]:
        """Swap in the plugins of ``config`` (same recorder and exporters); returns what changed.

        Only the ``plugins`` section takes effect at run time; changes to other sections are
        reported as needing a restart.
        """
        from controlplane.plugin_manager import build_plugin_set, discover_plugins
        from controlplane.session import _fallbacks

        available = discover_plugins(refresh=True)
        extras = [p for p in (self.session.plugins.get("sql-recorder"),) if p is not None] + self._extras
        plugins = build_plugin_set(config.plugins.enabled, config.plugins.settings, extra=extras, available=available)
        old = self.config.model_dump(mode="json")
        new = config.model_dump(mode="json")
        restart = sorted(k for k in new if k != "plugins" and new[k] != old.get(k))
        self.core.bind_plugins(plugins, _fallbacks(available))
        self.session.plugins = plugins
        self.config = self.config.model_copy(update={"plugins": config.plugins})
        now = self._now()
        self.session.clock.now_s = max(self.session.clock.now_s, now)
        plugins.hook.cp_run_started(ctx=self.core.ctx)
        names = [p.info.name for p in plugins.loaded]
        plugins.hook.cp_on_event(
            ctx=self.core.ctx,
            event=Decision(now, "admin", "daemon", "reload", None, "plugins reloaded from the config",
                           {"plugins": names, "needs_restart": restart}),
        )
        return {"plugins": names, "needs_restart": restart}

    def plugin_listing(self) -> list[dict[str, Any]]:
        out = []
        for p in self.session.plugins.loaded:
            settings = getattr(p.instance, "settings", None)
            out.append({
                "name": p.info.name,
                "dist": p.info.dist,
                "version": p.info.version,
                "entry_point": p.info.entry_point,
                "hooks": sorted(n for n in dir(p.instance) if n.startswith("cp_")),
                "settings": settings.model_dump(mode="json") if hasattr(settings, "model_dump") else None,
            })
        return out

    def worker_listing(self) -> list[dict[str, Any]]:
        out = []
        for wid, w in self.core.workers.items():
            out.append({
                "worker_id": wid,
                "model": w.model,
                "state": w.state.value,
                "waiting": len(w.waiting),
                "running": len(w.running),
                "busy": w.busy,
                "num_completed": w.num_completed,
                "alive": self.pool.alive(wid),
                **self.pool.info(wid),
                "facts": self.worker_facts.get(wid),
            })
        return out


def _ignore(_a: Any) -> None:
    pass
