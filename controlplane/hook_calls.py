"""How the core calls hook implementations: each isolated (an exception, or a result of the wrong
type, is recorded as the plugin's error and the next implementation decides), the errors kept by a
`HookMonitor`, and cheaper callers than pluggy's for the simulator's hot path.

What a hook raises is the plugin's error, whatever its class: an `Exception`, and also `SystemExit` (``argparse``
or ``sys.exit`` inside a plugin) and `asyncio.CancelledError` (a plugin that reads the result of a future it
cancelled). Hooks are plain functions: a task's cancellation (the daemon's drain, a client gone) is delivered at
the task's next ``await``, never inside a hook, so a `CancelledError` a hook raises is its own, and catching it
loses no cancellation (asyncio keeps a pending ``cancel()`` for that ``await``). Only `KeyboardInterrupt` goes
through, so Ctrl-C still stops a run, and the recorder's `RunDeleted` (`NOT_PLUGIN_FAILURES`).

`controlplane.plugin_manager` builds the run's plugin set with these and re-exports them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controlplane import hookspecs
from controlplane.hook_results import FIELD_CHECKS, RESULT_TYPES, wrong_result
from controlplane.plugin_checks import check_observes, hook_methods
from controlplane.plugin_error_origin import ErrorOrigin, error_origin
from controlplane.storage.errors import RunDeleted

TRACE_ENV = "CONTROLPLANE_TRACE_HOOKS"  # set to 1 to print every hook call to stderr
MAX_RECORDED_ERRORS = 100  # per (plugin, hook); later ones are only counted

log = logging.getLogger("controlplane.plugin_manager")


class PluginHookError(Exception):
    """A plugin's error, raised rather than isolated because the plugin set was built inside `plugin_errors_raised`
    (a test's ``replay_with(..., raise_plugin_errors=True)``): ``plugin`` failed in ``hook`` with ``error`` (its
    ``__cause__``: the plugin's own exception with its traceback, or the core's `TypeError`/`ValueError` about its
    answer). Every hook caller lets it through (`NOT_PLUGIN_FAILURES`), so no other plugin or fallback decides."""

    def __init__(self, plugin: str, hook: str, error: BaseException, where: str | None = None) -> None:
        at = f" (raised at {where})" if where else ""
        super().__init__(f"plugin {plugin!r} failed in {hook}: {type(error).__name__}: {error}{at}")
        self.plugin, self.hook, self.error, self.where = plugin, hook, error, where


#: What a hook implementation raising is not the plugin's error but is let through: Ctrl-C, and the run's recorder
#: finding its run deleted while being written (`controlplane.storage.deleted_runs`: the run cannot be recorded,
#: so it stops; isolated, the replay went on to its end, every later row an error). Every other exception,
#: `BaseException`s included (`SystemExit`, `asyncio.CancelledError`, `GeneratorExit`), is recorded as the plugin's
#: error and the next implementation, or the built-in fallback, decides. And a test's `PluginHookError`: a plugin's
#: error raised where it was caught (`plugin_errors_raised`), on its way out of the run.
NOT_PLUGIN_FAILURES: tuple[type[BaseException], ...] = (KeyboardInterrupt, RunDeleted, PluginHookError)


@dataclass
class PluginErrorRecord:
    plugin: str
    hook: str
    error: str
    subject: str | None = None  # what the call was about (request id, worker id, model), where the recorder knew it
    #: Where it was raised in the plugin's code (the first error of each plugin and hook only; None for an error
    #: the core found in a result): its ``error`` decision's payload (`ErrorOrigin.as_payload`).
    origin: ErrorOrigin | None = None

    @property
    def payload(self) -> dict[str, str] | None:
        return None if self.origin is None else self.origin.as_payload()


@dataclass
class HookMonitor:
    """Remembers which plugin answered the last policy call and which plugins raised.

    Each error is counted (``error_counts``) and told to every ``listeners`` callable as (plugin, hook);
    the first `MAX_RECORDED_ERRORS` of each plugin and hook are also kept for their ``error`` decisions.
    The first error of each plugin and hook keeps where it was raised (`controlplane.plugin_error_origin`): its
    reason ends with ``(raised at FILE:LINE in FUNCTION)``, its decision's payload holds that and the traceback.
    With ``warn_first`` (a monitor built while `warn_plugin_errors` is on: the daemon's), that first error is also
    logged as a warning, with its traceback; later ones are only counted.
    With ``raise_errors`` (a monitor built inside `plugin_errors_raised`: a test's), a plugin's error is raised
    where it was caught instead of recorded, so a test fails on it with its traceback.
    While ``muted`` (`PolicyCalls.drain_errors` delivering the error decision of an observer's failure), an
    observer's failure (``cp_on_event``) is neither counted nor kept: an observer failing on every event would
    fail on the decision about its own failure, and that again, filling its recorded errors with these.
    """

    last_plugin: str | None = None
    errors: list[PluginErrorRecord] = field(default_factory=list)
    error_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    num_errors: int = 0
    listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    muted: bool = False
    warn_first: bool = field(default_factory=lambda: _warn_errors)
    raise_errors: bool = field(default_factory=lambda: _raise_errors)

    def record(self, plugin: str, hook: str, exc: BaseException, subject: str | None = None) -> None:
        """Count ``plugin``'s error in ``hook``; ``subject``: the request id, worker id or model the call was about,
        when the caller knows it (else the one `PolicyCalls.drain_errors` is given, if any)."""
        if self.muted and hook == "cp_on_event":
            return
        if self.raise_errors:
            _raise_for_test(plugin, hook, exc)
        self.num_errors += 1
        for listener in self.listeners:
            listener(plugin, hook)
        key = (plugin, hook)
        n = self.error_counts.get(key, 0) + 1
        self.error_counts[key] = n
        if n > MAX_RECORDED_ERRORS:
            return
        error, origin = f"{type(exc).__name__}: {exc}", None
        if n == 1:  # (where it was raised: for the first only, so a plugin failing on every call costs no more)
            origin = error_origin(exc)
            if origin is not None:
                error = f"{error} (raised at {origin.where})"
            if self.warn_first:
                _warn_first_error(plugin, hook, exc, origin)
        self.errors.append(PluginErrorRecord(plugin, hook, error, subject, origin))

    def counts_by_plugin(self) -> dict[str, dict[str, int]]:
        """Every error counted so far, recorded as a decision or not: ``{plugin: {hook: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for (plugin, hook), n in sorted(self.error_counts.items()):
            out.setdefault(plugin, {})[hook] = n
        return out

    def take_errors(self) -> list[PluginErrorRecord]:
        errors, self.errors = self.errors, []
        return errors


#: Whether monitors built from now on log each plugin and hook's first error (`warn_plugin_errors`).
_warn_errors = False


def warn_plugin_errors(on: bool) -> None:
    """Log, once per plugin and hook, the first error of the plugin sets built from now on in this process. Only
    the daemon does this (as it starts; off as it stops): its log is where an operator looks, and it runs until
    stopped. A replay (``sim replay``, ``live-replay``) stays quiet: it prints its plugin errors' count at its end."""
    global _warn_errors
    _warn_errors = on


def _warn_first_error(plugin: str, hook: str, exc: BaseException, origin: ErrorOrigin | None) -> None:
    lines = str(exc).strip().splitlines()
    why = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    at = f" at {origin.where}" if origin is not None else ""
    log.warning("plugin %r: %s failed (%s)%s; isolated: the next plugin or the built-in policy decided. Later errors "
                "of this plugin and hook are counted, not logged (the run's num_plugin_errors, /metrics "
                "plugin_errors_total; `controlplane runs show RUN` lists the first of each)", plugin, hook, why, at,
                exc_info=(type(exc), exc, exc.__traceback__) if origin is not None else None)


#: Whether monitors built from now on raise plugin errors rather than record them (`plugin_errors_raised`).
_raise_errors = False


@contextlib.contextmanager
def plugin_errors_raised() -> Iterator[None]:
    """While in it, the plugin sets built raise each plugin error where the core caught it, instead of recording it
    and asking the next plugin: for tests (`controlplane.testing.replay_with(..., raise_plugin_errors=True)`,
    ``make_plugin_set(..., raise_plugin_errors=True)``). Never in a run that serves: isolation is what keeps one
    plugin's bug from failing every request."""
    global _raise_errors
    before, _raise_errors = _raise_errors, True
    try:
        yield
    finally:
        _raise_errors = before


def _raise_for_test(plugin: str, hook: str, exc: BaseException) -> None:
    """Raise `PluginHookError` for ``exc`` (the plugin's own, or the core's `TypeError`/`ValueError` about its
    answer), from it: its traceback is shown first."""
    origin = error_origin(exc)
    raise PluginHookError(plugin, hook, exc, origin.where if origin is not None else None) from exc


#: Hook calls that take longer than this many seconds are warned of, once per plugin and hook; None: hooks are not
#: timed. A live run sets it (`time_hooks`: the daemon, ``live-replay``): its hooks run on its event loop, where a
#: slow one stalls every request.
_slow_hook_s: float | None = None
_warned_slow: set[tuple[str, str]] = set()


def time_hooks(threshold_s: float | None) -> None:
    """Time every hook implementation of the plugin sets built from now on in this process, and warn (once per
    plugin and hook) of a call longer than ``threshold_s``; None turns it off. Only a live run's process does
    this (the daemon as it starts, ``live-replay`` for its run): a simulation times nothing, so it stays
    deterministic and pays nothing."""
    global _slow_hook_s
    _slow_hook_s = threshold_s


def _timed(fn: Any, plugin_name: str, hook: str, threshold_s: float) -> Any:
    """``fn``, warning when one call takes longer than ``threshold_s`` (the core's clock, not the policy's)."""

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - start
            if took > threshold_s and (plugin_name, hook) not in _warned_slow:
                _warned_slow.add((plugin_name, hook))
                log.warning("plugin %r: one call of %s took %.2f s (over %.2f s). Hooks of a live run (the daemon, "
                            "live-replay) run on its event loop: every request (and the daemon's /healthz) waited "
                            "for it. Keep hooks fast; move slow work (I/O, a model) to a thread or task and have the "
                            "hook read its latest result", plugin_name, hook, took, threshold_s)

    return call


def _isolated(fn: Any, plugin_name: str, hook: str, monitor: HookMonitor) -> Any:
    """Wrap one hook implementation so an exception, or a result of the wrong type
    (:mod:`controlplane.hook_results`), is recorded and the next one decides."""

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        try:
            result = fn(*args)
        except NOT_PLUGIN_FAILURES:
            raise
        except BaseException as exc:  # SystemExit, CancelledError too (the module's docstring)
            monitor.record(plugin_name, hook, exc)
            return None
        if result is not None:
            wrong = wrong_result(hook, result)
            if wrong is not None:
                monitor.record(plugin_name, hook, wrong)
                return None
            monitor.last_plugin = plugin_name
        return result

    return call


class _PluginProxy(types.SimpleNamespace):
    """What pluggy registers for a plugin: its hook implementations, isolated."""

    def __repr__(self) -> str:
        return f"<plugin {self.__dict__.get('_plugin_name', '?')}>"


def _isolating_proxy(plugin: object, plugin_name: str, monitor: HookMonitor) -> object:
    check_observes(plugin_name, plugin)
    proxy = _PluginProxy(_plugin_name=plugin_name)
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    for attr, fn, opts in hook_methods(plugin_name, plugin):
        if opts.get("wrapper") or opts.get("hookwrapper"):
            wrapped = fn  # wrappers see exceptions themselves
        else:
            threshold = _slow_hook_s
            wrapped = _isolated(fn if threshold is None else _timed(fn, plugin_name, attr, threshold),
                                plugin_name, attr, monitor)
            setattr(wrapped, marker, opts)
        setattr(proxy, attr, wrapped)
    return proxy


class _FirstResult:
    """Call implementations in pluggy's order and return the first non-None result of the
    hook's type (:mod:`controlplane.hook_results`; one of another type is recorded as an error).

    Arguments are positional, in the hook spec's order; an implementation that takes fewer
    arguments gets the ones it names.
    """

    __slots__ = ("calls", "hook", "monitor", "expected", "check")

    def __init__(self, calls: list[tuple[Any, tuple[int, ...] | None, str]], hook: str, monitor: HookMonitor) -> None:
        self.calls = calls
        self.hook = hook
        self.monitor = monitor
        self.expected = RESULT_TYPES.get(hook, object)
        self.check = FIELD_CHECKS.get(hook)

    def __call__(self, *args: Any) -> Any:
        for fn, pick, plugin in self.calls:
            try:
                result = fn(*args) if pick is None else fn(*[args[i] for i in pick])
            except NOT_PLUGIN_FAILURES:
                raise
            except BaseException as exc:
                self.monitor.record(plugin, self.hook, exc)
                continue
            if result is not None:
                if not isinstance(result, self.expected) or (self.check is not None and self.check(result)):
                    self.monitor.record(plugin, self.hook, wrong_result(self.hook, result))
                    continue
                self.monitor.last_plugin = plugin
                return result
        return None


class _Broadcast(_FirstResult):
    """Call every implementation in pluggy's order; results are dropped.

    The event bus (``cp_on_event``) goes through here a few times per simulated request, and
    most observers take only the event: an implementation taking one argument is called with
    it directly, without building an argument list.
    """

    __slots__ = ("single",)

    def __init__(self, calls: list[tuple[Any, tuple[int, ...] | None, str]], hook: str, monitor: HookMonitor) -> None:
        super().__init__(calls, hook, monitor)
        # (fn, index of its one argument or -1 for all of them or -2 for a pick, pick, plugin)
        self.single = [(fn, -1 if pick is None else (pick[0] if len(pick) == 1 else -2), pick, plugin)
                       for fn, pick, plugin in calls]

    def __call__(self, *args: Any) -> None:
        for fn, index, pick, plugin in self.single:
            try:
                if index >= 0:
                    fn(args[index])
                elif index == -1:
                    fn(*args)
                else:
                    fn(*[args[i] for i in pick])
            except NOT_PLUGIN_FAILURES:
                raise
            except BaseException as exc:
                self.monitor.record(plugin, self.hook, exc)


class _PluggyPositional:
    """pluggy's own caller (needed for wrappers and tracing), called with positional arguments."""

    __slots__ = ("caller", "argnames")

    def __init__(self, caller: Any) -> None:
        self.caller = caller
        self.argnames = tuple(caller.spec.argnames)

    def __call__(self, *args: Any) -> Any:
        return self.caller(**dict(zip(self.argnames, args)))

    def get_hookimpls(self) -> list[Any]:
        return self.caller.get_hookimpls()


def fast_caller(caller: Any, monitor: HookMonitor) -> Any:
    """A cheaper equivalent of a pluggy hook caller for the simulator's hot path.

    It takes the hook's arguments positionally, in the spec's order. The plugin set is fixed
    for a run, so the implementation list is resolved once and the isolation wrappers are
    bypassed (errors are caught here instead). Hooks with wrappers, and every hook while
    tracing is on, keep pluggy's own caller: they need its machinery.
    """
    impls = caller.get_hookimpls()
    if os.environ.get(TRACE_ENV) or any(i.wrapper or i.hookwrapper for i in impls):
        return _PluggyPositional(caller)
    spec_args = tuple(caller.spec.argnames)
    calls = []
    for i in reversed(impls):
        names = tuple(i.argnames)
        pick = None if names == spec_args else tuple(spec_args.index(n) for n in names)
        calls.append((getattr(i.function, "__wrapped__", i.function), pick, i.plugin_name))
    firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
    return (_FirstResult if firstresult else _Broadcast)(calls, caller.name, monitor)
