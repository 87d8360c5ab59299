"""A sweep spec's plugin names, checked before any run starts.

A run config's validation cannot know which plugins are installed (`build_plugin_set` refuses an
unknown one when a run starts), so a spec whose space names a plugin that is not installed, or
a setting its plugin does not take, would start the sweep and fail every run of that value.
:func:`check_plugin_names` refuses it instead, naming the spec, the key and the name, with the
installed names (or the plugin's settings) it is probably a typo of.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from controlplane.errors import ConfigError, did_you_mean
from controlplane.plugin import Plugin
from controlplane.plugin_manager import PluginInfo, discover_plugins

__all__ = ["check_plugin_names"]


def check_plugin_names(space: Mapping[str, Any], base_config: Mapping[str, Any], where: str,
                       available: Mapping[str, PluginInfo] | None = None) -> None:
    """Refuse (`ConfigError`, one line) a plugin name in ``plugins.enabled`` or
    ``plugins.settings.<plugin>[.<setting>]`` of the space or the base config that is not
    installed, or a setting its plugin's ``Settings`` does not have."""
    from sim.sweep.spec import RangeSpec, flatten  # (spec imports this module)

    available = available if available is not None else discover_plugins()
    plugins = base_config.get("plugins") or {}
    refs = [("base", key, value) for key, value in flatten(dict(plugins), "plugins.").items()]
    for key, values in space.items():
        if isinstance(values, RangeSpec):
            refs.append((f"space.{key}", key, None))
            continue
        for i, value in enumerate(values):
            if "." in key:
                refs.append((f"space.{key}", key, value))
            elif isinstance(value, dict):  # a bundle: its mappings of dotted keys
                refs += [(f"space.{key}[{i}].{dotted}", dotted, v) for dotted, v in value.items()]
    for label, key, value in refs:
        flat = flatten({key: value}) if isinstance(value, dict) else {key: value}
        for dotted, leaf in flat.items():
            problem = _problem(dotted.split("."), leaf, available)
            if problem is not None:
                raise ConfigError(f"{where}: {label}: {problem}")


def _problem(parts: list[str], value: Any, available: Mapping[str, PluginInfo]) -> str | None:
    """What is wrong with ``value`` at the key of ``parts`` (a plugin not installed, a setting it
    does not have), or None."""
    if parts[:2] == ["plugins", "enabled"]:  # the list, or one item of it (plugins.enabled.2)
        names = (value if isinstance(value, list) else []) if len(parts) == 2 else [value]
        for name in _strings(names):
            if name not in available:
                return f"unknown plugin {name!r}{_suggest(name, available, 'installed')}"
        return None
    if parts[:2] != ["plugins", "settings"] or len(parts) < 3:
        return None
    name = parts[2]
    if name not in available:
        return f"unknown plugin {name!r}{_suggest(name, available, 'installed')}"
    if len(parts) < 4:
        return None
    setting, target = parts[3], available[name].target
    if not (isinstance(target, type) and issubclass(target, Plugin)):
        return f"plugin {name!r} takes no settings (given {setting!r})"
    fields = target.Settings.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    if setting in known:
        return None
    return f"plugin {name!r} has no setting {setting!r}{_suggest(setting, sorted(known), 'its settings')}"


def _strings(values: Iterable[Any]) -> Iterator[str]:
    return (v for v in values if isinstance(v, str))  # anything else: the config's validation names it


def _suggest(name: str, choices: Iterable[str], what: str) -> str:
    """The close ``choices`` (`did_you_mean`), else the whole list."""
    choices = sorted(choices)
    return did_you_mean(name, choices) or f"; {what}: {', '.join(choices) or 'none'}"
