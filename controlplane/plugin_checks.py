"""Checks of a plugin as a run's plugin manager takes it in, with errors that say what to fix:
an unknown plugin name or hook name (with the close one it is probably a typo of), a hook
method left without ``@hookimpl``, an implementation taking an argument its hook does not pass,
an ``observes`` that is not a tuple of event types, a ``Settings`` that would take a typo, an object
passed as a plugin in code that is none (a class, a trace), two plugins of one name.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pluggy
from pydantic import BaseModel

from controlplane import hookspecs
from controlplane.errors import PluginError, did_you_mean
from controlplane.plugin import Plugin, is_withdrawn

#: The names of every hook (``cp_...``) the specs define.
HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("cp_"))


def unknown_hooks(pm: pluggy.PluginManager) -> str:
    """Each hook implemented but not specified (a typo), with its plugin and the spec name it is
    probably meant as: ``'cp_form_batches' in plugin 'x' (did you mean 'cp_form_batch'?)``."""
    found = []
    for name, caller in sorted(vars(pm.hook).items()):
        if getattr(caller, "spec", True) is None:
            plugins = ", ".join(repr(impl.plugin_name) for impl in caller.get_hookimpls())
            found.append(f"{name!r} in plugin {plugins}{did_you_mean(name, HOOK_NAMES)}")
    return "; ".join(found)


def check_shape(plugin_name: str, target: Any) -> None:
    """Refuse, without making the plugin, what a run's start refuses of a plugin class (or module of hook
    functions) as it takes it in (`PluginError`, the run start's message): a hook that does not exist (a typo),
    a hook's method left unmarked (`check_hook_names`), an implementation taking an argument its hook does not
    pass, a wrapper that is not a generator function, a ``Settings`` that would take a typo, an ``observes``
    that is not a tuple of event types. ``controlplane plugins list`` and ``plugins show`` run it, so a plugin
    every run would refuse is not listed as fine. (What only making it finds, its ``__init__`` raising, is not.)"""
    check_hook_names(plugin_name, target)
    for attr, fn, opts in hook_methods(plugin_name, target):
        passed = list(inspect.signature(getattr(hookspecs, attr)).parameters)
        extra = [a for a in _required_args(target, attr, fn) if a not in passed]
        if extra:
            raise PluginError(_extra_args(plugin_name, attr, extra, passed))
        if _not_a_generator(opts, fn):
            raise PluginError(_not_a_generator_error(plugin_name, attr))
    if isinstance(target, type) and issubclass(target, Plugin):
        check_settings_class(plugin_name, target.Settings)
    check_observes(plugin_name, target)


def _required_args(target: Any, attr: str, fn: Any) -> list[str]:
    """The arguments pluggy passes ``fn`` by name (its parameters without a default), less the instance's
    ``self`` where ``target`` is a class (a method read from the class is a plain function)."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if isinstance(target, type) and not inspect.ismethod(fn) \
            and not isinstance(inspect.getattr_static(target, attr, None), staticmethod):
        params = params[1:]
    return [p.name for p in params if p.default is p.empty]


def _not_a_generator(opts: Any, fn: Any) -> bool:
    """Whether ``fn``, marked with the hook-implementation options ``opts``, is a wrapper pluggy refuses."""
    return bool(opts and (opts.get("wrapper") or opts.get("hookwrapper")) and not inspect.isgeneratorfunction(fn))


def _not_a_generator_error(plugin_name: str, hook: str) -> str:
    return (f"plugin {plugin_name!r}: {hook} is marked as a wrapper but is not a generator function (a wrapper "
            "yields once, where the implementations it wraps run)")


def _extra_args(plugin_name: str, hook: str, extra: list[str], passed: list[str]) -> str:
    return (f"plugin {plugin_name!r}: {hook} takes {', '.join(map(repr, extra))}, which the hook does not pass "
            f"(the hook passes: {', '.join(passed)}; take any of them, by name)")


def check_hook_names(plugin_name: str, target: Any) -> None:
    """Refuse, before any plugin is made, a plugin class (or module) implementing a hook that does not exist
    or leaving a hook's method unmarked: what building the run's plugin manager refuses, found without
    making the plugin (the daemon checks its config so before any worker starts)."""
    for attr, _, _ in hook_methods(plugin_name, target):
        if attr not in HOOK_NAMES:
            raise PluginError(f"a plugin implements a hook that does not exist: {attr!r} in plugin "
                              f"{plugin_name!r}{did_you_mean(attr, HOOK_NAMES)}")


def hook_methods(plugin_name: str, target: Any) -> Iterator[tuple[str, Any, dict]]:
    """``target``'s methods marked ``@hookimpl``: (name, method, the marker's options); a method named after a
    hook but left unmarked is refused on the way (`check_marked`)."""
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    for attr in dir(target):
        if attr.startswith("__"):
            continue
        try:
            fn = getattr(target, attr)
        except Exception:
            continue
        opts = getattr(fn, marker, None)
        if opts is None:
            check_marked(plugin_name, attr, fn)
        else:
            yield attr, fn, opts


def check_marked(plugin_name: str, attr: str, fn: Any) -> None:
    """Refuse a method named after a hook but not marked ``@hookimpl``: pluggy would never call it
    (a hook the instance withdrew, `Plugin.withdraw`, is meant to be unmarked)."""
    if attr in HOOK_NAMES and callable(fn) and not is_withdrawn(fn):
        raise PluginError(f"plugin {plugin_name!r}: {attr} is not marked @hookimpl, so it would never be "
                          "called; decorate it with @hookimpl (from controlplane import hookimpl)")


def check_settings_class(plugin_name: str, settings_cls: Any) -> None:
    """Refuse a ``Settings`` that would take a typo silently (or not take keys at all): it must be a
    pydantic model with ``extra="forbid"``, as `PluginSettings` is."""
    if isinstance(settings_cls, type) and issubclass(settings_cls, BaseModel) \
            and settings_cls.model_config.get("extra") == "forbid":
        return
    raise PluginError(f"plugin {plugin_name!r}: Settings must subclass controlplane.PluginSettings (a pydantic model "
                      f"refusing unknown keys, so a typo in plugins.settings.{plugin_name}, or in a dict of "
                      "settings given to it in code, is an error); "
                      f"got {settings_cls!r}")


def is_plugin(obj: object) -> bool:
    """Whether ``obj`` can be registered as a plugin: a `Plugin` instance, or an object (a module) with at
    least one ``@hookimpl`` function. A class is not: its hooks would be unbound functions."""
    if isinstance(obj, type):
        return False
    if isinstance(obj, Plugin):
        return True
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    for attr in dir(obj):
        if attr.startswith("__"):
            continue
        try:
            if getattr(getattr(obj, attr), marker, None) is not None:
                return True
        except Exception:
            continue
    return False


def check_extra(obj: object, position: int) -> None:
    """Refuse an object passed as a plugin in code (``extra=``, `replay_with`'s arguments) that is none:
    registered, it would implement nothing and the run would go on as if it were not there. A `Plugin` whose
    ``Settings`` would take a typo is refused too (`check_settings_class`), as its class is when it is enabled."""
    if isinstance(obj, Plugin):
        check_settings_class(getattr(obj, "name", type(obj).__name__), type(obj).Settings)
    if is_plugin(obj):
        return
    shown = repr(obj)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if isinstance(obj, type):
        raise PluginError(f"plugin #{position + 1} passed in code is the class {obj.__name__}, not a plugin: "
                          f"pass an instance ({obj.__name__}())")
    kind = type(obj).__name__
    article = "an" if kind[:1] in "aeiou" else "a"
    raise PluginError(f"plugin #{position + 1} passed in code is {article} {kind} ({shown}), not a plugin: "
                      "a plugin is a controlplane.Plugin instance, or an object with @hookimpl methods")


def check_unique(names: list[str], enabled: set[str]) -> None:
    """Refuse two plugins of one name (pluggy would refuse with a dump of its registry): one passed in code
    named like an enabled one, or two passed in code."""
    for i, name in enumerate(names):
        if name in enabled:
            raise PluginError(f"plugin {name!r} is passed in code and enabled in plugins.enabled too: a plugin is "
                              f"registered once; leave {name!r} out of plugins.enabled, or do not pass it")
        if name in names[:i]:
            raise PluginError(f"two plugins passed in code are named {name!r}: pass one, or give the other a "
                              "name of its own (its class's `name`)")


def settings_of(settings_cls: type, raw: Any, key: str) -> Any:
    """``settings_cls(**raw)``; a value it refuses is a `SettingsError` naming each bad key under ``key``
    (``plugins.settings.<name>`` for a config's, the class's name for settings passed in code)."""
    from pydantic import ValidationError

    from controlplane.config import environment_note, error_message
    from controlplane.errors import SettingsError

    try:
        return settings_cls(**(raw or {}))
    except ValidationError as exc:
        problems = tuple((".".join(map(str, err["loc"])), err["msg"]) for err in exc.errors())
        keys = ['.'.join(filter(None, [key, loc])) for loc, _ in problems]
        lines = [f"{k}: {error_message(err)}{environment_note(k)}" for k, err in zip(keys, exc.errors())]
        raise SettingsError("invalid plugin settings:\n  " + "\n  ".join(lines), problems) from None


def check_observes(plugin_name: str, plugin: object) -> None:
    """Refuse an ``observes`` (`Plugin.observes`) the event bus cannot use: it must be None or a
    tuple of event types."""
    observes = getattr(plugin, "observes", None)
    if observes is None:
        return
    if not isinstance(observes, tuple) or not all(isinstance(t, type) for t in observes):
        raise PluginError(f"plugin {plugin_name!r}: observes must be a tuple of event types, e.g. "
                          f"(RequestFinished, WorkerChanged) from controlplane.events; got {observes!r}")


def register(pm: pluggy.PluginManager, proxy: object, name: str) -> None:
    """``pm.register``; pluggy's refusal (an implementation taking an argument its hook does not
    pass) is a one-line `PluginError` naming the plugin, the hook and the hook's arguments."""
    try:
        pm.register(proxy, name=name)
    except pluggy.PluginValidationError as exc:
        for hook, fn in vars(proxy).items():
            if hook not in HOOK_NAMES:
                continue
            passed = list(inspect.signature(getattr(hookspecs, hook)).parameters)
            extra = [a for a in inspect.signature(fn).parameters if a not in passed]
            if extra:
                raise PluginError(_extra_args(name, hook, extra, passed)) from None
            if _not_a_generator(getattr(fn, f"{hookspecs.PROJECT_NAME}_impl", None), fn):
                raise PluginError(_not_a_generator_error(name, hook)) from None
        raise PluginError(f"plugin {name!r}: {' '.join(str(exc).split())}") from None
