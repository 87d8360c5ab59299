"""How the core asks the plugins: policy hooks with their built-in fallbacks, the event bus, and
plugin errors turned into decision events (a plugin that raises never takes the run down)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.context import Clock, PolicyContext
from controlplane.plugin_manager import PluginSet, fast_caller
from controlplane.types import Decision

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
        self._policy_hooks: dict[str, tuple[Any, Any]] = {}
        for name in POLICY_HOOKS:
            fallback = fallbacks.get(name)
            if fallback is not None and fallback.name in enabled:
                fallback = None  # it was asked already and deferred: asking again changes nothing
            caller = getattr(hook, name)
            if fallback is not None:
                self._fallback_names[name] = f"{fallback.name} (fallback)"
                fallback = _positional(getattr(fallback, name), tuple(caller.spec.argnames))
            self._policy_hooks[name] = (fast_caller(caller, self.monitor), fallback)
        self.cache_store = fast_caller(hook.cp_cache_store, self.monitor)
        self.prefix_lookup = fast_caller(hook.cp_prefix_lookup, self.monitor)
        self.prefix_store = fast_caller(hook.cp_prefix_store, self.monitor)
        ctx.bind_prefix_peek(fast_caller(hook.cp_prefix_peek, self.monitor))

    def emit(self, event: Any) -> None:
        """Send an event (or a `Decision`) to every observer."""
        self._emit_hook(self.ctx, event)
        if self.monitor.errors:
            self.drain_errors()

    def decide(self, hook: str, *args: Any) -> tuple[Any, str | None]:
        """Ask a policy hook (arguments after ``ctx``, in the spec's order); the built-in fallback
        decides if every plugin defers or raises. Returns (decision, the plugin that made it)."""
        caller, fallback = self._policy_hooks[hook]
        monitor = self.monitor
        monitor.last_plugin = None
        try:
            result = caller(self.ctx, *args)
        except Exception as exc:  # only pluggy's own callers (hooks with wrappers) get here
            wrappers = [i.plugin_name for i in caller.get_hookimpls() if i.wrapper or i.hookwrapper]
            monitor.record(", ".join(wrappers) or "wrapper", hook, exc)
            result = None
        if monitor.errors:
            self.drain_errors()
        if result is not None:
            return result, monitor.last_plugin
        if fallback is None:
            return None, None
        return fallback(self.ctx, *args), self._fallback_names[hook]

    def call_observer(self, caller: Any, *args: Any) -> Any:
        """Call a non-policy hook caller (``cache_store``, ``prefix_lookup``, ...) with ``ctx``."""
        result = caller(self.ctx, *args)
        if self.monitor.errors:
            self.drain_errors()
        return result

    def drain_errors(self) -> None:
        """Turn the plugin errors recorded so far into ``error`` decisions on the bus."""
        for err in self.monitor.take_errors():
            self._emit_hook(
                self.ctx,
                Decision(self.clock.now_s, err.hook, err.plugin, "error", None, err.error, None, True),
            )
        self.monitor.errors.clear()  # errors raised by observers of the error events are dropped


def _positional(method: Callable[..., Any], spec_args: tuple[str, ...]) -> Callable[..., Any]:
    """Call ``method`` with the spec's positional arguments, passing only those it takes (an
    implementation may take fewer arguments than the spec, so specs can grow)."""
    names = tuple(inspect.signature(method).parameters)
    if names == spec_args:
        return method
    pick = tuple(spec_args.index(n) for n in names)
    return lambda *args: method(*(args[i] for i in pick))
