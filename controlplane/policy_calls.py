"""How the core asks the plugins: policy hooks with their built-in fallbacks, the event bus, and
plugin errors turned into decision events (a plugin that raises never takes the run down)."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.context import Clock, PolicyContext
from controlplane.hook_calls import NOT_PLUGIN_FAILURES
from controlplane.hook_results import FIELD_CHECKS, RESULT_TYPES, wrong_result
from controlplane.hookspecs import PROJECT_NAME
from controlplane.plugin_manager import PluginSet, _Broadcast, _FirstResult, fast_caller
from controlplane.types import Decision, Request, Worker

__all__ = ["POLICY_HOOKS", "PolicyCalls"]

#: The `firstresult` hooks that decide something; each may have a built-in fallback.
POLICY_HOOKS: tuple[str, ...] = (
    "cp_admit_request",
    "cp_cache_lookup",
    "cp_route_request",
    "cp_form_batch",
    "cp_scale",
    "cp_plan_memory",
    "cp_guardian_plan",
)


#: `PolicyCalls.decide`'s "no such argument" (every policy hook takes one to three after ctx).
_ABSENT: Any = object()


def _serves_by_priority(plugins: PluginSet, fallbacks: Mapping[str, object]) -> bool:
    """Whether the batcher serves waiting requests by priority: the first ``cp_form_batch`` implementation in call
    order (pluggy's: last registered first; wrappers aside) that declares ``serves_by_priority`` (a batcher; one
    that only rejects or defers, as ``priority-classes``, declares nothing), else the built-in fallback's."""
    impls = [i for i in plugins.hook.cp_form_batch.get_hookimpls()
             if not (i.hookwrapper or getattr(i, "wrapper", False))]
    for impl in reversed(impls):  # (the registered objects are proxies: the plugin itself by its name)
        declared = getattr(plugins.get(impl.plugin_name), "serves_by_priority", None)
        if declared is not None:
            return bool(declared)
    return bool(getattr(fallbacks.get("cp_form_batch"), "serves_by_priority", False))


class PolicyCalls:
    """One plugin set's callers, bound once per run (and again on a config reload)."""

    def __init__(self, plugins: PluginSet, fallbacks: Mapping[str, object], ctx: PolicyContext, clock: Clock) -> None:
        self.ctx = ctx
        self.clock = clock
        self.plugins = plugins
        hook = plugins.hook
        self.monitor = plugins.monitor
        self._emit_hook = fast_caller(hook.cp_on_event, self.monitor)
        enabled = {p.info.name for p in plugins.loaded}
        self._fallback_names: dict[str, str] = {}
        self._builtin = dict(fallbacks)  # each hook's built-in plugin, enabled or not (`decide_instead`)
        self._policy_hooks: dict[str, tuple[Any, Any]] = {}
        self._rescue: dict[str, tuple[Any, str]] = {}  # hook -> its enabled built-in, at defaults, and its name
        # Hooks that no plugin, or exactly one taking every argument, implements: called without
        # the generic caller's loop. (implementation or None, its plugin, fallback, fallback's name,
        # the type its results must have, the check of their fields or None)
        self._direct: dict[str, tuple[Any, str | None, Any, str | None, Any, Any]] = {}
        for name in POLICY_HOOKS:
            fallback = fallbacks.get(name)
            if fallback is not None and fallback.name in enabled:
                fallback = None  # it was asked already and deferred: asking again changes nothing
            if fallback is not None and not _implements(fallback, name):
                fallback = None  # withdrawn (`Plugin.withdraw`): it would defer every call
            caller = getattr(hook, name)
            builtin = fallbacks.get(name)
            if fallback is None and builtin is not None and _implements(builtin, name):  # (`_builtin_decides`)
                self._rescue[name] = (_positional(getattr(builtin, name), tuple(caller.spec.argnames)),
                                      f"{builtin.name} (fallback)")
            if fallback is not None:
                self._fallback_names[name] = f"{fallback.name} (fallback)"
                fallback = _positional(getattr(fallback, name), tuple(caller.spec.argnames))
            fast = fast_caller(caller, self.monitor)
            if type(fast) is _FirstResult and len(fast.calls) <= 1:
                fn, pick, plugin = fast.calls[0] if fast.calls else (None, None, None)
                if pick is not None:  # it takes fewer arguments than the spec (fixed-replicas' cp_scale)
                    fn = _picking_args(fn, pick, len(caller.spec.argnames))
                self._direct[name] = (fn, plugin, fallback, self._fallback_names.get(name), RESULT_TYPES[name],
                                     FIELD_CHECKS.get(name))
            self._policy_hooks[name] = (fast, fallback)
        #: Policy hooks that no plugin implements and no fallback answers: `decide` returns (None, None) for
        #: them, and the core skips the call (admission, the guardian plans, the cache lookup in a default replay).
        self.unanswered = frozenset(name for name, (fn, _, fallback, _, _, _) in self._direct.items()
                                    if fn is None and fallback is None)
        #: Policy hooks answered by one plugin alone, or its fallback when it defers (no wrapper, no second plugin):
        #: what it answers is the hook's answer (the core trusts a `SteadyScaleDecision` from ``cp_scale`` then: a
        #: plugin that promised the same answer does not defer to the fallback meanwhile).
        self.single_answer = frozenset(name for name, (fn, _, fallback, _, _, _) in self._direct.items()
                                       if fn is not None or fallback is not None)
        #: The plugins of this project's own ``plugins`` package (and the fallbacks), by the name `decide` reports:
        #: the core does not check their batch plans again per batch (`controlplane.batch_plan_checks`: ~5% of a
        #: replay); their tests do (tests/controlplane/test_batch_plan_checks.py). Every other plugin's are checked.
        self.own_plugins = frozenset([p.info.name for p in plugins.loaded if _is_own(p.instance)]
                                     + list(self._fallback_names.values()) + [n for _, n in self._rescue.values()])
        self._observers = _observer_calls(self._emit_hook, ctx)
        self._routes: dict[type, tuple[tuple[Any, Any, str], ...]] = {}  # event type -> its observers' calls
        cache_store = fast_caller(hook.cp_cache_store, self.monitor)
        self.cache_store = _NOBODY if _is_empty(cache_store) else cache_store
        self.prefix_lookup = fast_caller(hook.cp_prefix_lookup, self.monitor)
        self.prefix_store = fast_caller(hook.cp_prefix_store, self.monitor)
        ctx.bind_prefix_peek(fast_caller(hook.cp_prefix_peek, self.monitor))
        ctx.serves_by_priority = _serves_by_priority(plugins, fallbacks)

    def emit(self, event: Any) -> None:
        """Send an event (or a `Decision`) to every observer.

        The bus runs a few times per simulated request, so each event type's observers are
        resolved once (`_observer_calls`): an observer that names its handlers by event type
        (``event_handlers``, the SQL recorder) is called only for those types, with the event
        alone. A raising observer is recorded, as pluggy's isolation would, and the rest go on.
        """
        if self._observers is None:  # pluggy's own caller (wrappers, tracing)
            self._emit_hook(self.ctx, event)
        else:
            calls = self._routes.get(type(event))
            if calls is None:
                calls = self._routes[type(event)] = tuple(
                    (fn, ctx, plugin) for fn, ctx, plugin in
                    ((_route(handler, type(event)), ctx, plugin) for handler, ctx, plugin in self._observers)
                    if fn is not None
                )
            for fn, ctx, plugin in calls:
                try:
                    if ctx is None:
                        fn(event)
                    else:
                        fn(ctx, event)
                except NOT_PLUGIN_FAILURES:
                    raise
                except BaseException as exc:  # SystemExit, CancelledError too (`controlplane.hook_calls`)
                    self.monitor.record(plugin, "cp_on_event", exc)
        if self.monitor.errors:
            self.drain_errors(_event_subject(event))

    def decide(self, hook: str, a: Any = _ABSENT, b: Any = _ABSENT, c: Any = _ABSENT) -> tuple[Any, str | None]:
        """Ask a policy hook (its one to three arguments after ``ctx``, in the spec's order); the
        built-in fallback decides if every plugin defers or raises. Returns (decision, the plugin
        that made it). Fixed parameters rather than ``*args``: CPython 3.11 inlines the call of
        a function with defaults, not one taking ``*args`` (six per request)."""
        direct = self._direct.get(hook)
        if direct is not None:  # one implementation or none: what `_FirstResult` does, inlined
            fn, plugin, fallback, name, expected, check = direct
            if fn is not None:
                monitor = self.monitor
                try:  # a plain call, not fn(ctx, *args)'s (a tuple built, a call 3.11 does not inline)
                    if b is _ABSENT:
                        result = fn(self.ctx, a) if a is not _ABSENT else fn(self.ctx)
                    elif c is _ABSENT:
                        result = fn(self.ctx, a, b)
                    else:
                        result = fn(self.ctx, a, b, c)
                except NOT_PLUGIN_FAILURES:
                    raise
                except BaseException as exc:
                    monitor.record(plugin, hook, exc)
                    result = None
                if result is not None and (not isinstance(result, expected) or (check is not None and check(result))):
                    monitor.record(plugin, hook, wrong_result(hook, result))
                    result = None
                if monitor.errors:
                    self.drain_errors(_subject(a, b))
                if result is not None:
                    monitor.last_plugin = plugin
                    return result, plugin
            if fallback is None:
                return None, None
            if b is _ABSENT:  # the built-in fallback (admission, guardian plan, cache lookup without a plugin)
                return (fallback(self.ctx, a) if a is not _ABSENT else fallback(self.ctx)), name
            return (fallback(self.ctx, a, b) if c is _ABSENT else fallback(self.ctx, a, b, c)), name
        args = _given(a, b, c)
        caller, fallback = self._policy_hooks[hook]
        monitor = self.monitor
        monitor.last_plugin = None
        failed = False
        try:
            result = caller(self.ctx, *args)
        except NOT_PLUGIN_FAILURES:
            raise
        except BaseException as exc:  # only pluggy's own callers (hooks with wrappers) get here
            monitor.record(_wrappers(caller), hook, exc)
            result, failed = None, True
        if result is not None and type(caller) is not _FirstResult:  # a wrapper's answer (each policy's is checked)
            wrong = wrong_result(hook, result)
            if wrong is not None:
                monitor.record(_wrappers(caller), hook, wrong)
                result, failed = None, True
        if monitor.errors:
            self.drain_errors(_subject(a, b))
        if result is not None:  # (no implementation answered: a wrapper's own answer, `slo-admission`'s demotion)
            return result, monitor.last_plugin or _wrappers(caller)
        if fallback is None:
            return self._builtin_decides(hook, args) if failed else (None, None)
        return fallback(self.ctx, *args), self._fallback_names[hook]

    def _builtin_decides(self, hook: str, args: tuple[Any, ...]) -> tuple[Any, str | None]:
        """A wrapper raised (or answered wrongly) where the hook's built-in plugin is enabled, so no fallback is
        left to ask: the built-in plugin, at its default settings, decides (as for an unusable plan,
        `decide_instead`), rather than nobody (a batch never planned, a request routed nowhere). (None, None)
        when the hook has none, or it raises too (recorded)."""
        rescue = self._rescue.get(hook)
        if rescue is None:
            return None, None
        fn, name = rescue
        try:
            return fn(self.ctx, *args), name
        except NOT_PLUGIN_FAILURES:
            raise
        except BaseException as exc:
            self.monitor.record(name, hook, exc)
            self.drain_errors(_subject(*args[:2]))
            return None, None

    def decide_instead(self, hook: str, plugin: str | None, error: str, a: Any,
                       b: Any = _ABSENT) -> tuple[Any, str] | None:
        """``plugin`` answered ``hook`` (for ``a``, and ``b`` where the hook takes two arguments) with a decision
        the core cannot carry out (``error``, in words): that is recorded as ``plugin``'s error, and the hook's
        built-in plugin, at its default settings, decides instead. Returns (its decision, its name), or None when
        the answer was already the built-in plugin's (or the hook has none): nothing else can decide (the error
        is not recorded then: the caller records it with what it does instead)."""
        builtin = self._builtin.get(hook)
        name = getattr(builtin, "name", None)
        if builtin is None or (plugin or "").split(" ", 1)[0] == name:
            return None
        self.monitor.record(plugin or "unknown", hook, ValueError(error))
        self.drain_errors(_subject(a, b))
        args = _given(a, b, _ABSENT)
        call = _positional(getattr(builtin, hook), tuple(getattr(self.plugins.hook, hook).spec.argnames))
        return call(self.ctx, *args), f"{name} (fallback)"

    def call_observer(self, caller: Any, a: Any, b: Any = _ABSENT) -> Any:
        """Call a non-policy hook caller (``cache_store``, ``prefix_lookup``, ...) with ``ctx``
        and its one or two arguments (parameters, not ``*args``: see `decide`)."""
        if caller is _NOBODY:
            return None
        result = caller(self.ctx, a) if b is _ABSENT else caller(self.ctx, a, b)
        if self.monitor.errors:
            self.drain_errors(_subject(a, b))
        return result

    def drain_errors(self, subject: str | None = None) -> None:
        """Turn the plugin errors recorded so far into ``error`` decisions on the bus, each with its subject (the
        one it was recorded with, else ``subject``: the request id, worker id or model of the call that failed).
        An observer that raises on those decisions makes errors of its own: they are drained too, as any error, but
        for an observer's failure on the decision of an observer's failure (its own, or another's), which is neither
        counted nor recorded (`HookMonitor.muted`): an observer failing on every event would fail on each decision
        about it in turn, filling its recorded errors with those, and two would answer each other's."""
        monitor = self.monitor
        errors = monitor.take_errors()
        while errors:
            for err in errors:
                monitor.muted = err.hook == "cp_on_event"
                try:
                    self._emit_hook(
                        self.ctx,
                        Decision(self.clock.now_s, err.hook, err.plugin, "error", err.subject or subject, err.error,
                                 err.payload, True),  # (the first of each plugin and hook: where it was raised)
                    )
                finally:
                    monitor.muted = False
            errors = monitor.take_errors()


def _wrappers(caller: Any) -> str:
    """The names of the wrappers of a hook's pluggy caller: whom to blame for its answer."""
    names = [i.plugin_name for i in caller.get_hookimpls() if i.wrapper or i.hookwrapper]
    return ", ".join(names) or "wrapper"


def _is_own(plugin: object) -> bool:
    """Whether ``plugin`` (an instance, or a module of hook functions) comes from this project's ``plugins`` package."""
    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    return module == "plugins" or module.startswith("plugins.")


def _implements(plugin: object, hook: str) -> bool:
    """Whether ``plugin`` implements ``hook`` (a method with pluggy's hook-implementation mark)."""
    return getattr(getattr(plugin, hook, None), f"{PROJECT_NAME}_impl", None) is not None


def _positional(method: Callable[..., Any], spec_args: tuple[str, ...]) -> Callable[..., Any]:
    """Call ``method`` with the spec's positional arguments, passing only those it takes (an
    implementation may take fewer arguments than the spec, so specs can grow)."""
    names = tuple(inspect.signature(method).parameters)
    if names == spec_args:
        return method
    return _picking_args(method, tuple(spec_args.index(n) for n in names), len(spec_args))


def _picking_args(fn: Callable[..., Any], pick: tuple[int, ...], arity: int) -> Callable[..., Any]:
    """``fn`` called with the arguments at ``pick`` of the spec's ``arity`` (ctx, ...), as `_FirstResult`
    calls it: a function made for this shape, with the spec's parameters (a call 3.11 inlines),
    where a ``*args`` lambda built a tuple, picked from it and called through a star (every tick
    for fixed-replicas' ``cp_scale``)."""
    params = ", ".join(f"a{i}" for i in range(arity))
    env: dict[str, Any] = {"fn": fn}
    args = ", ".join(f"a{i}" for i in pick)
    exec(f"def picking({params}):\n    return fn({args})\n", env)  # noqa: S102  (made from argument positions)
    return env["picking"]


def _subject(a: Any = _ABSENT, b: Any = _ABSENT) -> str | None:
    """What a hook call with these first arguments was about, for its error decisions: the request's id where one
    is given (admission, cache, routing, guardians, prefix caches), else the worker's id (batching, memory plans),
    else the model a ``cp_scale`` call names."""
    for x in (a, b):
        if isinstance(x, Request):
            return x.request_id
    for x in (a, b):
        if isinstance(x, Worker):
            return x.worker_id
    return a if isinstance(a, str) else None


def _event_subject(event: Any) -> str | None:
    """What an event an observer raised on is about: its request's id, its worker's id, or a decision's subject."""
    request = getattr(event, "request", None)
    if isinstance(request, Request):
        return request.request_id
    for name in ("request_id", "worker_id", "subject"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            return value
    return None


def _given(a: Any, b: Any, c: Any) -> tuple[Any, ...]:
    """The arguments `PolicyCalls.decide` was given, as a tuple."""
    if b is _ABSENT:
        return () if a is _ABSENT else (a,)
    return (a, b) if c is _ABSENT else (a, b, c)


class _Nobody:
    """The caller of a hook no plugin implements."""

    __slots__ = ()

    def __call__(self, *args: Any) -> None:
        return None


_NOBODY = _Nobody()


def _is_empty(caller: Any) -> bool:
    """Whether ``caller`` (from ``fast_caller``) calls no implementation at all."""
    return type(caller) in (_FirstResult, _Broadcast) and not caller.calls


def _observer_calls(emit_hook: Any, ctx: PolicyContext) -> tuple[tuple[Any, Any, str], ...] | None:
    """``cp_on_event``'s implementations in call order, as (handler, ctx or None, plugin name):
    the handler takes the event alone when ctx is None, else (ctx, event). A handler is a
    callable, a mapping of event types to callables taking the event (``event_handlers``), or a
    callable for the event types its plugin ``observes`` only (`_Observing`).
    None when pluggy's own caller must run (wrappers, tracing)."""
    if type(emit_hook) is not _Broadcast:
        return None
    out: list[tuple[Any, Any, str]] = []
    for fn, _index, pick, plugin in emit_hook.single:
        owner = getattr(fn, "__self__", None)
        handlers = getattr(owner, "event_handlers", None)
        is_observer = getattr(fn, "__name__", None) == "cp_on_event"
        if handlers is not None and is_observer:
            out.append((dict(handlers), None, plugin))
            continue
        if pick is None:
            call, with_ctx = fn, ctx
        elif pick == (1,):
            call, with_ctx = fn, None
        else:  # it takes ctx alone, or nothing
            call, with_ctx = _picking(fn, pick), ctx
        observes = getattr(owner, "observes", None) if is_observer else None
        out.append((call if observes is None else _Observing(call, tuple(observes)), with_ctx, plugin))
    return tuple(out)


class _Observing:
    """An observer's call for the event types its plugin ``observes`` (and their subclasses)."""

    __slots__ = ("call", "types")

    def __init__(self, call: Callable[..., Any], types: tuple[type, ...]) -> None:
        self.call, self.types = call, types


def _picking(fn: Callable[..., Any], pick: tuple[int, ...]) -> Callable[[Any, Any], Any]:
    """``fn`` called with the arguments at ``pick`` of (ctx, event)."""
    return lambda ctx, event: fn(*[(ctx, event)[i] for i in pick])


def _route(handler: Any, event_type: type) -> Any:
    """The callable of one observer for events of ``event_type`` (None: it ignores them)."""
    if isinstance(handler, dict):
        return handler.get(event_type)
    if isinstance(handler, _Observing):
        return handler.call if issubclass(event_type, handler.types) else None
    return handler
