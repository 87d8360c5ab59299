"""Test helpers for plugin authors (and our own tests).

    from controlplane.testing import make_context, make_requests, replay_with

    decisions = replay_with(MyRouter(), trace=make_trace(n=200, qps=5)).decisions
    assert all(d.plugin == "my-router" for d in decisions if d.hook == "cp_route_request")
    assert_reproducible(MyRouter(), trace=make_trace(n=200, qps=5))  # two replays, the same decisions
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controlplane.config import RunConfig, load_config
from controlplane.context import Clock, PolicyContext, RunInfo
from controlplane.decisions import ScaleDecision
from controlplane.events import RequestFinished
from controlplane.hook_calls import PluginHookError, plugin_errors_raised  # noqa: F401 (PluginHookError: re-exported)
from controlplane.hookspecs import hookimpl
from controlplane.kv_cache import KVCacheManager
from controlplane.plugin import Plugin
from controlplane.plugin_manager import PluginSet, build_plugin_set
from controlplane.replay_differences import first_difference
from controlplane.types import Decision, Request, RequestStatus, Worker, WorkerState


def make_config(**overrides: Any) -> RunConfig:
    """A run config with defaults, nested overrides as dicts (``control={"tick_s": 0.5}``)."""
    return load_config(None, overrides)


def make_requests(
    n: int = 10,
    *,
    prompt_tokens: int | Sequence[int] = 128,
    output_tokens: int | Sequence[int] = 16,
    interval_s: float = 0.1,
    model: str | None = "default",
    prefix: str = "r",
) -> list[Request]:
    """``n`` requests arriving every ``interval_s`` seconds, for ``model``: by default ``"default"``, the model of
    the default config (`make_config`) and of `make_worker`, as a run resolves a request that names none, so a hook
    called directly reads what it reads in a run (``ctx.metrics["queue:default"]``). ``model=None``: requests that
    name no model (a run gives them its first model before anyone sees them)."""

    def pick(v: int | Sequence[int], i: int) -> int:
        return v if isinstance(v, int) else v[i % len(v)]

    return [
        Request(f"{prefix}{i}", i * interval_s, pick(prompt_tokens, i), pick(output_tokens, i), model=model)
        for i in range(n)
    ]


def make_worker(worker_id: str = "default-0", model: str = "default", **fields: Any) -> Worker:
    """A ready worker; pass ``waiting=deque([...])``, ``running=[...]`` or limits as fields.

    Its requests are put on it as a run leaves them: waiting ones as they are, running ones running
    (`put_running`: a request fresh from `make_requests` prefilled, its first token sampled), and
    ``num_kv_blocks_used`` counted from them as the core counts it (each running request's context in blocks,
    where the worker has a KV budget), unless given: a prefill starting counts its blocks too, so a given count
    may be higher, not lower. The count may pass ``num_kv_blocks``, as in a run: a context counts the token its
    next decode computes, so a cache that filled up holds more than it has, and the batcher must preempt. A state
    a run never reaches is a ValueError saying what is wrong (a request both waiting and running, or running
    twice; see `put_running`), so that a batching plan tested on the worker is checked (`plan_error`) as in a
    run."""
    w = Worker(worker_id=worker_id, model=model, **{"state": WorkerState.READY, **fields})
    for r in w.waiting:
        r.worker_id = worker_id
    for r in w.running:
        put_running(r, worker_id)
    _refuse_twice(w)
    given = fields.get("num_kv_blocks_used")
    KVCacheManager(None).recount(w)  # (nothing counted without a KV budget, as in a run)
    if given is not None:
        if w.has_kv_budget and given < w.num_kv_blocks_used:
            raise ValueError(f"make_worker: num_kv_blocks_used={given}, fewer than the {w.num_kv_blocks_used} KV "
                             f"blocks its running requests hold (leave it out to have them counted)")
        w.num_kv_blocks_used = given
    return w


def put_running(r: Request, worker_id: str = "default-0") -> Request:
    """``r`` running on ``worker_id`` as a run leaves it: status ``RUNNING``, and a waiting one that has computed
    none of its prompt (as `make_requests` makes it) prefilled: its prompt (and any ``recompute_tokens``) in the
    KV cache, its first token sampled (``output_tokens`` at least 1). Progress set already is kept (a prefill part
    done: ``num_computed_tokens`` below the prompt; tokens generated: ``output_tokens``), and so is that of a
    request given with status ``RUNNING`` (none of its prompt computed: its prefill batch runs now).
    ``scheduled_s`` and, once prefilled, ``first_token_s`` are its arrival where unset. A ValueError for a
    request a run would not have running: finished, on another worker, or done generating (a run completes it; a
    request of one output token completes with its prefill)."""
    rid = r.request_id
    if r.status not in (RequestStatus.WAITING, RequestStatus.RUNNING):
        raise ValueError(f"put_running: {rid} is {r.status.value}, not waiting or running")
    if r.worker_id not in (None, worker_id):
        raise ValueError(f"put_running: {rid} is on worker {r.worker_id}, not {worker_id}")
    if r.status is RequestStatus.WAITING and r.num_computed_tokens == 0:
        r.num_computed_tokens = r.prefill_target_tokens
        r.output_tokens = max(r.output_tokens, r.recompute_tokens + 1)  # the prefill samples a token
    if r.is_decoding and r.output_tokens >= r.max_output_tokens:
        raise ValueError(f"put_running: {rid} has generated {r.output_tokens} of its {r.max_output_tokens} output "
                         "tokens: a run completes it, it is not running (give it more output_tokens)")
    r.status, r.worker_id = RequestStatus.RUNNING, worker_id
    if r.scheduled_s is None:
        r.scheduled_s = r.arrival_s
    if r.first_token_s is None and r.is_decoding:
        r.first_token_s = r.arrival_s
    return r


def _refuse_twice(w: Worker) -> None:
    """A ValueError where ``w``'s queues hold a request twice."""
    seen: set[int] = set()
    for r in (*w.waiting, *w.running):
        if id(r) in seen:
            raise ValueError(f"make_worker: {r.request_id} is on worker {w.worker_id} twice (waiting and running, "
                             "or listed twice)")
        seen.add(id(r))


def make_context(
    *,
    now_s: float = 0.0,
    workers: Iterable[Worker] = (),
    config: RunConfig | None = None,
    seed: int = 0,
    metrics: Mapping[str, float] | None = None,
) -> PolicyContext:
    """A policy context for calling one hook implementation directly."""
    config = config or make_config(seed=seed)
    return PolicyContext(
        clock=Clock(now_s),
        rng=np.random.default_rng(seed),
        config=config,
        run=RunInfo(run_id=None, mode="sim", seed=seed),
        workers={w.worker_id: w for w in workers},
        metrics=dict(metrics or {}),
    )


def make_plugin_set(*plugins: object, enabled: Sequence[str] | None = None, raise_plugin_errors: bool = False,
                    **settings: Any) -> PluginSet:
    """A fresh plugin manager: the default (or ``enabled``) built-ins plus ``plugins`` asked first. ``settings``
    by plugin name are those of the ``enabled`` ones (``**{"least-loaded": {"by": "tokens"}}``); a plugin passed
    as an instance takes its settings in its constructor (``MyRouter({"choices": 3})``): settings given here by
    its name are a `ConfigError` saying so.

    Call a hook through ``.hook`` by keyword (``ps.hook.cp_route_request(ctx=ctx, request=r, workers=ws)``): the
    first non-None answer in call order, each implementation isolated as in a run; a plugin's errors are kept in
    ``ps.monitor`` (``.take_errors()``: plugin, hook, error; ``.error_counts``), not raised, unless
    ``raise_plugin_errors``. ``.loaded``: the plugins in it (``.info.name``, ``.instance``)."""
    config = make_config()
    with plugin_errors_raised() if raise_plugin_errors else nullcontext():
        return build_plugin_set(enabled if enabled is not None else config.plugins.enabled, settings, extra=plugins)


def make_trace(n: int = 100, *, qps: float = 2.0, prompt_tokens: int = 512, output_tokens: int = 64, seed: int = 0):
    """A small synthetic trace (Poisson arrivals, lognormal lengths) as TraceRequests: ``n`` >= 0 requests at
    ``qps`` > 0 requests a second (from 0 s), prompt and output lengths around the given medians (>= 1)."""
    from sim.traces.record import TraceRequest

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"make_trace: n must be a whole number of requests >= 0, got {n!r}")
    if not 0 < qps < float("inf"):
        raise ValueError(f"make_trace: qps must be a finite rate > 0 requests a second, got {qps!r}")
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / qps, size=n))
    t -= t[0]
    p = np.maximum(1, rng.lognormal(np.log(prompt_tokens), 0.5, size=n)).astype(int)
    o = np.maximum(1, rng.lognormal(np.log(output_tokens), 0.5, size=n)).astype(int)
    return [TraceRequest(str(i), float(t[i]), int(p[i]), int(o[i])) for i in range(n)]


def decisions_in(events: Iterable[Any]) -> list[Decision]:
    return [e for e in events if isinstance(e, Decision)]


def finished_in(events: Iterable[Any]) -> list[Request]:
    return [e.request for e in events if isinstance(e, RequestFinished)]


class ScaleTo(Plugin):
    """An autoscaler that asks for ``replicas`` replicas of every model at every tick."""

    name = "scale-to"

    def __init__(self, replicas: int) -> None:
        super().__init__()
        self.replicas = replicas

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        return ScaleDecision(model, self.replicas, f"test: {self.replicas} replicas")


class ScaleCycle(Plugin):
    """An autoscaler that cycles through ``counts`` replicas, one count every ``period_s`` seconds:
    replicas start, drain and stop while requests flow."""

    name = "scale-cycle"

    def __init__(self, counts: tuple[int, ...] = (2, 5, 3, 5, 2), period_s: float = 8.0) -> None:
        super().__init__()
        self.counts, self.period_s = counts, period_s

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        return ScaleDecision(model, self.counts[int(ctx.now_s // self.period_s) % len(self.counts)], "test")


def stored_rows(url: str, run_id: int, what: str) -> list[dict[str, Any]]:
    """A stored run's rows of one kind (``requests``, ``decisions``, ...) from the database at ``url``."""
    from controlplane.storage import make_engine
    from controlplane.storage.queries import iter_rows

    engine = make_engine(url)
    try:
        return list(iter_rows(engine, run_id, what))
    finally:
        engine.dispose()


class EventLog:
    """An observer that keeps every event and decision of a run in memory."""

    name = "event-log"

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def cp_on_event(self, event):
        self.events.append(event)

    @property
    def decisions(self) -> list[Decision]:
        return decisions_in(self.events)

    @property
    def finished(self) -> list[Request]:
        return finished_in(self.events)


@dataclass
class ReplayResult:
    summary: dict[str, Any]
    events: list[Any] = field(default_factory=list)
    run_id: int | None = None  # the stored run's id (None when nothing was stored)

    @property
    def decisions(self) -> list[Decision]:
        return decisions_in(self.events)

    @property
    def requests(self) -> list[Request]:
        return finished_in(self.events)


def replay_with(
    *plugins: object,
    trace: Iterable[Any] | None = None,
    config: RunConfig | None = None,
    db_url: str | None = None,
    transforms: Any = None,
    raise_plugin_errors: bool = False,
    **config_overrides: Any,
) -> ReplayResult:
    """Replay a small trace with ``plugins`` asked before the configured ones, the first passed first.

    ``trace`` is a stream of requests or a trace file; ``transforms`` a ``sim.replay.TraceTransforms``
    (window, speed-up, rate, limit), seeded by the run, as ``controlplane sim replay`` applies them.
    A stream is read once: a reader (``read_trace``) or generator already read to its end is a ValueError (pass a
    list, ``list(read_trace(...))``, to replay one trace several times). Returns the summary and every event and
    decision. Nothing is stored unless ``db_url`` is given.
    ``config`` (a `RunConfig`, e.g. from ``load_config``) is the base: ``db_url`` and the keyword overrides
    (``cluster={...}``) apply on top of it, as on top of the defaults without it.
    ``raise_plugin_errors``: a plugin's error (an exception, or an answer the core refuses) fails the replay with a
    `PluginHookError` naming the plugin, the hook and where it was raised, from the plugin's exception (its
    traceback shown first), instead of being isolated and recorded as an ``error`` decision.
    """
    from sim.replay import replay

    for i, p in enumerate(plugins):
        _refuse_a_trace(p, i)
    _refuse_a_read_stream(trace)
    overrides = dict(config_overrides)
    if db_url:
        overrides.setdefault("storage", {})["url"] = db_url
    if config is None:
        config = make_config(**overrides)
    elif overrides:  # on top of the given config, as nested overrides merge everywhere
        from pydantic._internal._utils import deep_update  # the merge pydantic-settings itself uses

        config = make_config(**deep_update(config.model_dump(), overrides))
    log = next((p for p in plugins if isinstance(p, EventLog)), None)
    extra = list(plugins)
    if log is None:
        log = EventLog()
        extra.append(log)
    with plugin_errors_raised() if raise_plugin_errors else nullcontext():
        result = replay(trace if trace is not None else make_trace(), config, transforms=transforms,
                        record=db_url is not None, extra_plugins=extra)
    return ReplayResult(result.summary, log.events, result.run_id)


def assert_reproducible(*plugins: object, trace: Iterable[Any] | None = None, **replay_args: Any) -> ReplayResult:
    """Replay ``trace`` twice with ``plugins`` (as `replay_with`, which takes ``replay_args``) and raise an
    AssertionError naming the first decision, else the first request, where the two replays differ. A replay is
    deterministic, so a difference is a policy that reads the wall clock, the global random module or state kept
    outside the run (a module global, a class attribute): `controlplane runs compare` would read that noise as a
    difference between runs. Each replay gets its own copy of each plugin (``copy.deepcopy`` of an instance, a new
    instance of a class), as it was before the first; a stream trace is read into a list once. Returns the first
    replay's result."""
    if trace is not None and not isinstance(trace, (str, bytes, os.PathLike, Sequence)):
        _refuse_a_read_stream(trace)
        trace = list(trace)
    results = [replay_with(*(_fresh(p, i) for i, p in enumerate(plugins)), trace=trace, **replay_args)
               for _ in range(2)]
    first, second = results
    difference = first_difference(first.decisions, second.decisions, first.requests, second.requests)
    if difference is not None:
        raise AssertionError(f"not reproducible: two replays of the same trace, config and seed differ; {difference}. "
                             "A policy reads the wall clock, the global random module or state kept outside the run "
                             "(use ctx.now_s and ctx.rng, keep state on the plugin)")
    return first


def _fresh(plugin: object, position: int) -> object:
    """A copy of ``plugin`` as it is now: a new instance of a class (no arguments), a deep copy of an instance."""
    if isinstance(plugin, type):
        return plugin()
    if isinstance(plugin, EventLog):
        return EventLog()
    try:
        return copy.deepcopy(plugin)
    except Exception as exc:  # noqa: BLE001 (a lock, a client, a thread: said so)
        raise TypeError(f"assert_reproducible: plugin #{position + 1} ({type(plugin).__name__}) cannot be copied "
                        f"for each replay ({type(exc).__name__}: {exc}); pass its class instead") from None


def _refuse_a_trace(obj: object, position: int) -> None:
    """A trace (or trace file) passed positionally, where plugins go, is an error saying ``trace=``: registered as
    a plugin it would do nothing and the default trace would replay (`build_plugin_set` refuses other non-plugins)."""
    import os

    from controlplane.plugin_checks import is_plugin

    if is_plugin(obj) or isinstance(obj, type):
        return
    if isinstance(obj, (str, bytes, os.PathLike)) or hasattr(obj, "__iter__"):
        kind = type(obj).__name__
        article = "an" if kind[:1] in "aeiou" else "a"
        raise TypeError(f"replay_with: argument #{position + 1} is {article} {kind}, not a plugin; pass the trace by "
                        "keyword, after the plugins: replay_with(MyPlugin(), trace=make_trace(n=200))")


def _refuse_a_read_stream(trace: object) -> None:
    """A trace reader (or any generator) already read to its end, as one `replay_with` replayed before, is a
    ValueError: it would replay no request, silently."""
    if trace is None or isinstance(trace, (str, bytes, os.PathLike)) or not hasattr(trace, "__iter__"):
        return
    stream = iter(trace)  # (a reader's own generator; a list's fresh iterator)
    if inspect.isgenerator(stream) and inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED:
        kind = type(trace).__name__
        raise ValueError(f"replay_with: the trace (a {kind}) was already read to its end or closed (by an earlier "
                         "replay_with?), and a reader is read once: it would replay no request. To replay one trace "
                         "several times, pass a list read once (trace=list(read_trace(path))), the file's path "
                         "(trace=path) or a fresh reader")
