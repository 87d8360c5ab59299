"""Build a run's plugin manager: discover entry points, select, configure, isolate failures.

Built-in policies are found through the ``controlplane`` entry-point group exactly like
third-party plugins. Nothing is loaded at import time: every run builds its own manager.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy
from pydantic import BaseModel

from controlplane import hookspecs
from controlplane.errors import ConfigError, ControlPlaneError, PluginError, did_you_mean
from controlplane.hook_calls import (  # re-exported: the callers' home before they moved
    MAX_RECORDED_ERRORS,
    TRACE_ENV,
    HookMonitor,
    PluginErrorRecord,
    _Broadcast,
    _FirstResult,
    _isolating_proxy,
    _PluggyPositional,
    fast_caller,
)
from controlplane.plugin import Plugin, PluginSettings
from controlplane.plugin_checks import (
    check_extra,
    check_settings_class,
    check_unique,
    register,
    settings_of,
    unknown_hooks,
)

__all__ = ["ALLOW_ENV", "ENTRY_POINT_GROUP", "MAX_RECORDED_ERRORS", "TRACE_ENV", "HookMonitor", "LoadedPlugin",
           "PluginErrorRecord", "PluginInfo", "PluginSet", "_Broadcast", "_FirstResult", "_PluggyPositional",
           "build_plugin_set", "checked_plugin_names", "discover_plugins", "fast_caller", "instance_settings",
           "instantiate", "validated_settings"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "controlplane"
ALLOW_ENV = "CONTROLPLANE_LOAD_PLUGINS"  # comma-separated allow-list of plugin names


class PluginInfo:
    """An installed plugin: its name, what its entry point loads, its distribution.

    Discovery reads entry points without importing them: ``target`` (and with it ``hooks`` and
    ``doc``) imports the plugin's module on first use, ``dist`` and ``version`` read its
    distribution's metadata on first use. A run imports only the plugins it enables.

    Two installed distributions may declare one name: discovery keeps one `PluginInfo` for it
    with the other entry points in ``others``, and loading it (a run enabling that name) is the
    error naming both; ``plugins list`` shows it as such, and every other plugin stays usable.
    """

    __slots__ = ("name", "entry_point", "_target", "_dist", "_ep", "others")

    _UNSET: Any = object()

    def __init__(self, name: str, target: Any, dist: str | None = _UNSET, version: str | None = _UNSET,
                 entry_point: str | None = None, *, ep: metadata.EntryPoint | None = None) -> None:
        self.name, self.entry_point = name, entry_point
        self._target, self._ep = target, ep
        self._dist: tuple[str | None, str | None] | None = None if dist is self._UNSET else (dist, version)
        self.others: tuple[PluginInfo, ...] = ()  # other installed entry points of this name: a conflict

    @classmethod
    def from_entry_point(cls, ep: metadata.EntryPoint) -> PluginInfo:
        return cls(ep.name, cls._UNSET, entry_point=ep.value, ep=ep)

    @property
    def target(self) -> Any:
        """A Plugin subclass or a module of hook implementations (imported on first use)."""
        if self.others:
            raise PluginError(self.conflict())
        if self._target is self._UNSET:
            ep = self._ep
            try:
                target = ep.load()
            except Exception as exc:  # a broken third-party install names itself (and a package of ours hidden)
                from controlplane.shadowed_packages import shadowing_note

                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
                                  f"{shadowing_note(exc, ep.module)}") from exc
            if not isinstance(target, (type, types.ModuleType)):  # a function, an instance: would do nothing
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) loads a {type(target).__name__}, "
                                  "not a plugin class or a module of hook functions")
            declared = getattr(target, "name", None) if isinstance(target, type) else None
            if declared and declared != ep.name:
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) loads a plugin named {declared!r}: "
                                  "an entry point must be named after its plugin")
            self._target = target
        return self._target

    def conflict(self) -> str:
        """Why a plugin of this name cannot be loaded: two (or more) installed entry points declare it."""
        places = " and ".join(_where(i.entry_point, *i._distribution()) for i in self.entries())
        return (f"two installed plugins are named {self.name!r}: {places}; uninstall one, or rename its entry "
                "point and class")

    def entries(self) -> tuple[PluginInfo, ...]:
        """This entry point and the others of its name (`others`)."""
        return (self, *self.others)

    def _distribution(self) -> tuple[str | None, str | None]:
        if self._dist is None:
            self._dist = _dist_of(self._ep) if self._ep is not None else (None, None)
        return self._dist

    @property
    def dist(self) -> str | None:
        """The distribution that installed it (each, comma-separated, for a conflict)."""
        if self.others:
            return ", ".join(str(i._distribution()[0] or "-") for i in self.entries())
        return self._distribution()[0]

    @property
    def version(self) -> str | None:
        if self.others:
            return ", ".join(str(i._distribution()[1] or "-") for i in self.entries())
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
    ``sys.path`` or one of its folders changes (a distribution installed or removed adds or removes
    a folder there: a plugin ``pip install``-ed in a notebook is found by the next run), and on disk
    between processes (:func:`_cached_scan`); ``refresh=True`` scans again (the daemon's config
    reload does, to see plugins installed since it started).
    """
    global _discovered
    key = _path_key()
    if refresh or _discovered is None or _discovered[0] != key:
        _discovered = (key, _scan_entry_points() if refresh else _cached_scan())
    return dict(_discovered[1])


def _path_key() -> tuple[tuple[str, int], ...]:
    """``sys.path`` with each folder's modification time (a stat each: microseconds a run)."""
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, -1))
    return tuple(key)


def _scan_entry_points() -> dict[str, PluginInfo]:
    return _by_name(PluginInfo.from_entry_point(ep) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def _by_name(infos: Iterable[PluginInfo]) -> dict[str, PluginInfo]:
    """Entry points by name; a name declared twice keeps the second in the first's ``others`` (a conflict
    only a run enabling that name fails on, rather than every command)."""
    found: dict[str, PluginInfo] = {}
    for info in infos:
        first = found.get(info.name)
        if first is None:
            found[info.name] = info
        else:
            first.others += (info,)
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
            return _by_name(PluginInfo(row["name"], PluginInfo._UNSET, row["dist"], row["version"], row["value"],
                                       ep=metadata.EntryPoint(row["name"], row["value"], ENTRY_POINT_GROUP))
                            for row in rows)
        except (KeyError, TypeError):
            pass  # a file this code cannot read: scan
    found = _scan_entry_points()
    pydantic = [[ep.name, ep.value] for ep in metadata.entry_points(group=cache.PYDANTIC_GROUP)]
    cache.write(path, signature, [{"name": i.name, "value": i.entry_point, "dist": i._distribution()[0],
                                   "version": i._distribution()[1]}
                                  for info in found.values() for i in info.entries()], pydantic)
    return found


@dataclass
class LoadedPlugin:
    info: PluginInfo
    instance: object
    in_code: bool = False  # passed in code (`build_plugin_set`'s ``extra``), not loaded by name from the config


@dataclass
class PluginSet:
    """The run's plugin manager and what was loaded into it."""

    pm: pluggy.PluginManager
    hook: Any
    monitor: HookMonitor
    loaded: list[LoadedPlugin]

    def versions(self) -> list[dict[str, Any]]:
        """The loaded plugins in call order (a run row's ``plugins``): those passed in code first, the first passed
        first, then the config's, the first enabled first (`build_plugin_set`), each ``{"name", "dist",
        "version"}``; one passed in code with settings (`instance_settings`) has its ``"settings"`` too (the
        config's are in its ``plugins.settings``), their URLs' passwords masked as the stored config's are."""
        from controlplane.session import without_password

        rows: list[dict[str, Any]] = []
        for p in [p for p in self.loaded if p.in_code] + [p for p in self.loaded if not p.in_code]:
            row: dict[str, Any] = {"name": p.info.name, "dist": p.info.dist, "version": p.info.version}
            settings = instance_settings(p.instance) if p.in_code else None
            if settings is not None:
                masked = without_password({"plugins": {"settings": {p.info.name: settings}}})
                row["settings"] = masked["plugins"]["settings"][p.info.name]
            rows.append(row)
        return rows

    def get(self, name: str) -> object | None:
        for p in self.loaded:
            if p.info.name == name:
                return p.instance
        return None


def instance_settings(instance: object) -> dict[str, Any] | None:
    """A plugin's settings as data: its ``settings`` (a `Plugin`'s `PluginSettings`, or any pydantic model) dumped
    to JSON types; None for a plugin without them."""
    settings = getattr(instance, "settings", None)
    return settings.model_dump(mode="json") if isinstance(settings, BaseModel) else None


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
        return settings_of(target.Settings, raw_settings, key)
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
                         available: Mapping[str, PluginInfo], *, warn_left_out: bool = True) -> list[str]:
    """The ``enabled`` plugins a run loads (the allow-list, `ALLOW_ENV`, applied), after refusing
    (`ConfigError`) one that is not installed, one listed twice, and settings of one not enabled;
    ``warn_left_out``: log a warning naming those the allow-list leaves out (a caller that says so itself: False)."""
    configured = list(enabled)
    allow = os.environ.get(ALLOW_ENV)
    if allow:
        allowed = {n.strip() for n in allow.split(",") if n.strip()}
        _warn_not_installed(allowed, available)
        enabled = [n for n in enabled if n in allowed]
        if warn_left_out:
            _warn_left_out([n for n in configured if n not in allowed])
    unknown = [n for n in enabled if n not in available]
    if unknown:
        hints = [did_you_mean(n, available) for n in unknown]
        named = [f"{n!r}{hint}" for n, hint in zip(unknown, hints)]
        how = "" if all(hints) else (
            f" (a plugin is found by name through the entry-point group {ENTRY_POINT_GROUP!r} of an installed "
            "distribution: pip install your package; see docs/plugins.md#registering-a-plugin)")
        raise ConfigError(
            f"plugins.enabled: unknown plugin(s) {', '.join(named)}; "
            f"installed: {', '.join(_installed(available)) or 'none'}"
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


def _installed(available: Mapping[str, PluginInfo]) -> list[str]:
    """The installed plugins' names, each that cannot be loaded marked with why (``x (failed to load: ...)``):
    for the error of a name that is not one of them (importing each: only when that error is made)."""
    names = []
    for name in sorted(available):
        try:
            available[name].target
        except PluginError as exc:
            cause = exc.__cause__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).split(": ", 1)[-1]
            names.append(f"{name} (failed to load: {why})")
        else:
            names.append(name)
    return names


_warned_allowed: set[str] = set()


def _warn_left_out(left_out: list[str]) -> None:
    """Warn (once per set) of enabled plugins the allow-list leaves out: the run goes without them, its config
    says otherwise (`sim replay` and `live-replay` say so themselves and store the plugins that ran)."""
    key = ",".join(left_out)
    if left_out and key not in _warned_left_out:
        _warned_left_out.add(key)
        log.warning("%s=%r leaves out %s of plugins.enabled: the run goes without %s", ALLOW_ENV,
                    os.environ.get(ALLOW_ENV, ""), ", ".join(left_out), "it" if len(left_out) == 1 else "them")


_warned_left_out: set[str] = set()


def _warn_not_installed(allowed: set[str], available: Mapping[str, PluginInfo]) -> None:
    """Warn (once per name) of an allow-list name no installed plugin has: most likely a misspelling,
    which would silently leave the plugin it meant out of every run."""
    for name in sorted(allowed - set(available) - _warned_allowed):
        _warned_allowed.add(name)
        log.warning("%s names %r, which is not an installed plugin%s; runs leave out every plugin it does not "
                    "name", ALLOW_ENV, name, did_you_mean(name, available) or " (controlplane plugins list shows them)")


def _refuse_settings_of_instances(settings: Mapping[str, Any], enabled: Sequence[str], extras: list[object]) -> None:
    """Settings given by name for a plugin passed in code (an instance, made with its settings already) are a
    `ConfigError` saying how to give them: to its constructor. (Otherwise: "settings given for plugin(s) not
    enabled", of a plugin the caller just passed.)"""
    for obj in extras:
        name = getattr(obj, "name", None)
        if isinstance(name, str) and name in settings and name not in enabled:
            cls, given = type(obj).__name__, settings[name]
            shown = repr(dict(given) if isinstance(given, Mapping) else given)
            raise ConfigError(
                f"plugins.settings.{name}: plugin {name!r} is passed in code as an instance, made with its settings "
                f"already; give them to its constructor instead: {cls}({shown}) (or {cls}({cls}.Settings(...)))")


def build_plugin_set(
    enabled: Sequence[str],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    extra: Iterable[object] = (),
    available: Mapping[str, PluginInfo] | None = None,
) -> PluginSet:
    """Create a plugin manager with the ``enabled`` plugins, first listed = first asked.

    ``extra`` objects (the run's recorder, progress bar, test plugins) are registered too, after
    the named plugins, so they are asked first: the first of them first, as in ``enabled``. One that
    is not a plugin, or a second plugin of one name, is a `PluginError`. One with a
    ``watch_plugin_errors(monitor)`` method is given the set's `HookMonitor` (the Prometheus exporter
    counts every error through it: the ``error`` decisions stop at `MAX_RECORDED_ERRORS`).
    """
    settings = dict(settings or {})
    available = dict(available if available is not None else discover_plugins())
    extras = list(extra)
    _refuse_settings_of_instances(settings, enabled, extras)
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
    for i, obj in enumerate(extras):
        check_extra(obj, i)
    names = [getattr(obj, "name", None) or f"extra-{i}" for i, obj in enumerate(extras)]
    for obj in extras:  # an exporter counting every plugin error, past the recorded ones (`HookMonitor.listeners`)
        watch = getattr(obj, "watch_plugin_errors", None)
        if callable(watch):
            watch(monitor)
    check_unique(names, set(enabled))
    for name, obj in reversed(list(zip(names, extras))):  # the first passed is asked first, as in plugins.enabled
        register(pm, _isolating_proxy(obj, name, monitor), name)
    loaded.extend(LoadedPlugin(PluginInfo(name, type(obj), None, None, None), obj, in_code=True)
                  for name, obj in zip(names, extras))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {unknown_hooks(pm) or exc}") from None
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return PluginSet(pm=pm, hook=pm.hook, monitor=monitor, loaded=loaded)
