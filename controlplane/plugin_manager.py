"""Build a run's plugin manager: discover entry points, select, configure, isolate failures.

Built-in policies are found through the ``controlplane`` entry-point group exactly like
third-party plugins. Nothing is loaded at import time: every run builds its own manager.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from pydantic import ValidationError

from controlplane import hookspecs
from controlplane.config import environment_note, error_message
from controlplane.errors import ConfigError, ControlPlaneError, PluginError, SettingsError, did_you_mean
from controlplane.hook_results import FIELD_CHECKS, RESULT_TYPES, wrong_result
from controlplane.plugin import Plugin, PluginSettings
from controlplane.plugin_checks import (
    check_marked,
    check_observes,
    check_settings_class,
    register,
    unknown_hooks,
)

ENTRY_POINT_GROUP = "controlplane"
ALLOW_ENV = "CONTROLPLANE_LOAD_PLUGINS"  # comma-separated allow-list of plugin names
TRACE_ENV = "CONTROLPLANE_TRACE_HOOKS"  # set to 1 to print every hook call to stderr
MAX_RECORDED_ERRORS = 100  # per (plugin, hook); later ones are only counted


class PluginInfo:
    """An installed plugin: its name, what its entry point loads, its distribution.

    Discovery reads entry points without importing them: ``target`` (and with it ``hooks`` and
    ``doc``) imports the plugin's module on first use, ``dist`` and ``version`` read its
    distribution's metadata on first use. A run imports only the plugins it enables.
    """

    __slots__ = ("name", "entry_point", "_target", "_dist", "_ep")

    _UNSET: Any = object()

    def __init__(self, name: str, target: Any, dist: str | None = _UNSET, version: str | None = _UNSET,
                 entry_point: str | None = None, *, ep: metadata.EntryPoint | None = None) -> None:
        self.name, self.entry_point = name, entry_point
        self._target, self._ep = target, ep
        self._dist: tuple[str | None, str | None] | None = None if dist is self._UNSET else (dist, version)

    @classmethod
    def from_entry_point(cls, ep: metadata.EntryPoint) -> PluginInfo:
        return cls(ep.name, cls._UNSET, entry_point=ep.value, ep=ep)

    @property
    def target(self) -> Any:
        """A Plugin subclass or a module of hook implementations (imported on first use)."""
        if self._target is self._UNSET:
            ep = self._ep
            try:
                target = ep.load()
            except Exception as exc:  # a broken third-party install names itself
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            if not isinstance(target, (type, types.ModuleType)):  # a function, an instance: would do nothing
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) loads a {type(target).__name__}, "
                                  "not a plugin class or a module of hook functions")
            declared = getattr(target, "name", None) if isinstance(target, type) else None
            if declared and declared != ep.name:
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) loads a plugin named {declared!r}: "
                                  "an entry point must be named after its plugin")
            self._target = target
        return self._target

    def _distribution(self) -> tuple[str | None, str | None]:
        if self._dist is None:
            self._dist = _dist_of(self._ep) if self._ep is not None else (None, None)
        return self._dist

    @property
    def dist(self) -> str | None:
        return self._distribution()[0]

    @property
    def version(self) -> str | None:
        return self._distribution()[1]

    @property
    def hooks(self) -> list[str]:
        return sorted(n for n in dir(self.target) if n.startswith("cp_"))

    @property
    def doc(self) -> str:
        """The first paragraph of the plugin's docstring, on one line (its first line alone was often cut
        mid-sentence)."""
        return " ".join(inspect.cleandoc(self.target.__doc__ or "").split("\n\n", 1)[0].split())

    def __repr__(self) -> str:
        return f"PluginInfo({self.name!r}, entry_point={self.entry_point!r})"


_discovered: tuple[tuple[str, ...], dict[str, PluginInfo]] | None = None


def discover_plugins(*, refresh: bool = False) -> dict[str, PluginInfo]:
    """Every plugin installed under the entry-point group, by name (found, not yet imported).

    Scanning every installed distribution's metadata takes milliseconds (a hundred
    ``entry_points.txt`` read and parsed), so the result is kept for the process until
    ``sys.path`` changes, and on disk between processes (:func:`_cached_scan`);
    ``refresh=True`` scans again (the daemon's config reload does, to see plugins installed
    since it started).
    """
    global _discovered
    key = tuple(sys.path)
    if refresh or _discovered is None or _discovered[0] != key:
        _discovered = (key, _scan_entry_points() if refresh else _cached_scan())
    return dict(_discovered[1])


def _scan_entry_points() -> dict[str, PluginInfo]:
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            first = found[ep.name]
            raise PluginError(
                f"two installed plugins are named {ep.name!r}: {_where(first.entry_point, first.dist, first.version)} "
                f"and {_where(ep.value, *_dist_of(ep))}; uninstall one, or rename its entry point and class"
            )
        found[ep.name] = PluginInfo.from_entry_point(ep)
    return found


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else (None, None)


def _where(value: str | None, dist: str | None, version: str | None) -> str:
    """An entry point's target and the distribution that installed it."""
    return f"{value} ({dist} {version})" if dist else f"{value}"


def _cached_scan() -> dict[str, PluginInfo]:
    """:func:`_scan_entry_points`, read from the on-disk cache (:mod:`controlplane.entry_point_cache`)
    when the installed distributions are those it was written for; else scanned and written there."""
    from controlplane import entry_point_cache as cache

    path = cache.cache_file()
    if path is None:
        return _scan_entry_points()
    signature = cache.signature()
    rows = cache.read(path, signature)
    if rows is not None:
        try:
            return {row["name"]: PluginInfo(row["name"], PluginInfo._UNSET, row["dist"], row["version"], row["value"],
                                            ep=metadata.EntryPoint(row["name"], row["value"], ENTRY_POINT_GROUP))
                    for row in rows}
        except (KeyError, TypeError):
            pass  # a file this code cannot read: scan
    found = _scan_entry_points()
    pydantic = [[ep.name, ep.value] for ep in metadata.entry_points(group=cache.PYDANTIC_GROUP)]
    cache.write(path, signature, [{"name": info.name, "value": info.entry_point, "dist": info.dist,
                                   "version": info.version} for info in found.values()], pydantic)
    return found


@dataclass
class PluginErrorRecord:
    plugin: str
    hook: str
    error: str


@dataclass
class HookMonitor:
    """Remembers which plugin answered the last policy call and which plugins raised."""

    last_plugin: str | None = None
    errors: list[PluginErrorRecord] = field(default_factory=list)
    error_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    num_errors: int = 0

    def record(self, plugin: str, hook: str, exc: Exception) -> None:
        self.num_errors += 1
        key = (plugin, hook)
        n = self.error_counts.get(key, 0) + 1
        self.error_counts[key] = n
        if n <= MAX_RECORDED_ERRORS:
            self.errors.append(PluginErrorRecord(plugin, hook, f"{type(exc).__name__}: {exc}"))

    def counts_by_plugin(self) -> dict[str, dict[str, int]]:
        """Every error counted so far, recorded as a decision or not: ``{plugin: {hook: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for (plugin, hook), n in sorted(self.error_counts.items()):
            out.setdefault(plugin, {})[hook] = n
        return out

    def take_errors(self) -> list[PluginErrorRecord]:
        errors, self.errors = self.errors, []
        return errors


def _isolated(fn: Any, plugin_name: str, hook: str, monitor: HookMonitor) -> Any:
    """Wrap one hook implementation so an exception, or a result of the wrong type
    (:mod:`controlplane.hook_results`), is recorded and the next one decides."""

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        try:
            result = fn(*args)
        except Exception as exc:
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
    for attr in dir(plugin):
        if attr.startswith("__"):
            continue
        try:
            fn = getattr(plugin, attr)
        except Exception:
            continue
        opts = getattr(fn, marker, None)
        if opts is None:
            check_marked(plugin_name, attr, fn)
            continue
        if opts.get("wrapper") or opts.get("hookwrapper"):
            wrapped = fn  # wrappers see exceptions themselves
        else:
            wrapped = _isolated(fn, plugin_name, attr, monitor)
            setattr(wrapped, marker, opts)
        setattr(proxy, attr, wrapped)
    return proxy


@dataclass
class LoadedPlugin:
    info: PluginInfo
    instance: object


@dataclass
class PluginSet:
    """The run's plugin manager and what was loaded into it."""

    pm: pluggy.PluginManager
    hook: Any
    monitor: HookMonitor
    loaded: list[LoadedPlugin]

    def versions(self) -> list[dict[str, str | None]]:
        return [{"name": p.info.name, "dist": p.info.dist, "version": p.info.version} for p in self.loaded]

    def get(self, name: str) -> object | None:
        for p in self.loaded:
            if p.info.name == name:
                return p.instance
        return None


def instantiate(info: PluginInfo, raw_settings: Mapping[str, Any] | None, *, key: str | None = None) -> object:
    """Validate a plugin's settings and create its per-run instance. ``key`` is where the settings
    are in the config, for errors (default ``plugins.settings.<name>``; a plugin that makes others
    from its own settings, `shadow`, gives theirs)."""
    settings = validated_settings(info, raw_settings, key=key)
    target = info.target
    if settings is not None:
        return _started(info.name, target, settings)
    return _started(info.name, target) if isinstance(target, type) else target


def validated_settings(info: PluginInfo, raw_settings: Mapping[str, Any] | None, *,
                       key: str | None = None) -> PluginSettings | None:
    """A plugin's ``Settings`` from ``raw_settings`` as a run validates them before creating it
    (`ConfigError` naming each bad key under ``key``); None for a plugin without settings."""
    key = key or f"plugins.settings.{info.name}"
    target = info.target
    if isinstance(target, type) and issubclass(target, Plugin):
        check_settings_class(info.name, target.Settings)
        try:
            return target.Settings(**(raw_settings or {}))
        except ValidationError as exc:
            problems = tuple((".".join(map(str, err["loc"])), err["msg"]) for err in exc.errors())
            keys = ['.'.join(filter(None, [key, loc])) for loc, _ in problems]
            lines = [f"{k}: {error_message(err)}{environment_note(k)}" for k, err in zip(keys, exc.errors())]
            raise SettingsError("invalid plugin settings:\n  " + "\n  ".join(lines), problems) from None
    if raw_settings:
        raise ConfigError(f"{key}: this plugin takes no settings")
    return None


def _started(name: str, cls: type, *args: Any) -> object:
    """``cls(*args)``; an exception there is a `PluginError` naming the plugin (the run cannot be made as configured),
    but for the project's own errors, which name what is wrong already (a plugin building others, `shadow`)."""
    try:
        return cls(*args)
    except ControlPlaneError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed to start: {type(exc).__name__}: {exc}") from exc


def checked_plugin_names(enabled: Sequence[str], settings: Mapping[str, Any],
                         available: Mapping[str, PluginInfo]) -> list[str]:
    """The ``enabled`` plugins a run loads (the allow-list, `ALLOW_ENV`, applied), after refusing
    (`ConfigError`) one that is not installed, one listed twice, and settings of one not enabled."""
    configured = list(enabled)
    allow = os.environ.get(ALLOW_ENV)
    if allow:
        allowed = {n.strip() for n in allow.split(",") if n.strip()}
        enabled = [n for n in enabled if n in allowed]
    unknown = [n for n in enabled if n not in available]
    if unknown:
        hints = [did_you_mean(n, available) for n in unknown]
        named = [f"{n!r}{hint}" for n, hint in zip(unknown, hints)]
        how = "" if all(hints) else (
            f" (a plugin is found by name through the entry-point group {ENTRY_POINT_GROUP!r} of an installed "
            "distribution: pip install your package; see docs/plugins.md#registering-a-plugin)")
        raise ConfigError(
            f"plugins.enabled: unknown plugin(s) {', '.join(named)}; "
            f"installed: {', '.join(sorted(available)) or 'none'}"
            + how
        )
    twice = sorted({n for n in enabled if list(enabled).count(n) > 1})
    if twice:
        raise ConfigError(f"plugins.enabled: {', '.join(map(repr, twice))} is listed twice")
    stray = [n for n in settings if n not in configured]  # a plugin the allow-list leaves out takes its settings along
    if stray:
        raise ConfigError(
            f"plugins.settings: settings given for plugin(s) not enabled: {', '.join(map(repr, stray))}"
        )
    return list(enabled)


def build_plugin_set(
    enabled: Sequence[str],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    extra: Iterable[object] = (),
    available: Mapping[str, PluginInfo] | None = None,
) -> PluginSet:
    """Create a plugin manager with the ``enabled`` plugins, first listed = first asked.

    ``extra`` objects (the run's recorder, progress bar, test plugins) are registered too, after
    the named plugins, so they are asked first.
    """
    settings = dict(settings or {})
    available = dict(available if available is not None else discover_plugins())
    enabled = checked_plugin_names(enabled, settings, available)

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    monitor = HookMonitor()
    loaded: list[LoadedPlugin] = []
    for name in reversed(list(enabled)):  # pluggy asks the last registered first
        info = available[name]
        instance = instantiate(info, settings.get(name))
        register(pm, _isolating_proxy(instance, name, monitor), name)
        loaded.append(LoadedPlugin(info, instance))
    loaded.reverse()
    for i, obj in enumerate(extra):
        name = getattr(obj, "name", None) or f"extra-{i}"
        register(pm, _isolating_proxy(obj, name, monitor), name)
        loaded.append(LoadedPlugin(PluginInfo(name, type(obj), None, None, None), obj))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {unknown_hooks(pm) or exc}") from None
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return PluginSet(pm=pm, hook=pm.hook, monitor=monitor, loaded=loaded)


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
            except Exception as exc:
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
            except Exception as exc:
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
