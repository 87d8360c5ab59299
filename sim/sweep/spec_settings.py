"""A sweep spec's plugin settings, validated for every point before any run starts.

A run validates its plugins' settings when it builds them (`validated_settings`), so a bad value
in the seventh entry of a grid would fail its runs only after six points had been run.
:func:`check_plugin_settings` builds every point's plugins section when the spec is loaded and
validates it the same way (each distinct plugin's settings once), naming the value's place in
the spec: ``space.<key>[i]``, a bundle's ``space.<bundle>[i].<key>``, or ``base``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controlplane.config import PluginsConfig
from controlplane.errors import ConfigError, SettingsError
from controlplane.plugin_manager import PluginInfo, checked_plugin_names, discover_plugins, validated_settings

if TYPE_CHECKING:
    from sim.sweep.spec import LoadedSpec

__all__ = ["check_plugin_settings"]


def check_plugin_settings(loaded: LoadedSpec, where: str, points: list[dict[str, Any]] | None = None,
                          available: Mapping[str, PluginInfo] | None = None) -> None:
    """Refuse (`ConfigError`, one line) a point whose run would refuse its plugins: a setting's
    value its plugin's ``Settings`` rejects, settings of a plugin the point does not enable, a
    plugin listed twice. Only each point's ``plugins`` section is built (its other keys are
    validated with its run config before any run: `sim.sweep.run.make_tasks`, a search's candidates)."""
    from sim.sweep.spec import apply_dotted  # (spec imports this module)

    available = available if available is not None else discover_plugins()
    space, base = loaded.spec.space, {"plugins": loaded.base_config["plugins"]}
    seen: set[str] = set()  # the points' plugin overrides already checked (most points vary other keys)
    valid: set[str] = set()  # (plugin, settings) already validated
    for overrides in points if points is not None else loaded.spec.points():
        mine = {k: v for k, v in overrides.items() if k == "plugins" or k.startswith("plugins.")}
        key = json.dumps(mine, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            try:
                plugins = PluginsConfig(**apply_dotted(base, mine)["plugins"]).model_dump(mode="json")
            except ValidationError:  # (the point's run config says what is wrong, naming the point and key)
                loaded.run_config(overrides, loaded.spec.seeds[0])
                raise
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            enabled = checked_plugin_names(plugins["enabled"], plugins["settings"], available)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {_places(space, overrides, 'plugins')}: {exc}") from None
        for name in enabled:
            raw = plugins["settings"].get(name)
            key = json.dumps([name, raw], sort_keys=True, default=str)
            if key in valid:
                continue
            try:
                validated_settings(available[name], raw)
            except SettingsError as exc:
                raise ConfigError(f"{where}: " + "; ".join(
                    _problem(space, overrides, f"plugins.settings.{name}", loc, msg, raw)
                    for loc, msg in exc.problems)) from None
            except ConfigError as exc:  # a plugin that takes no settings
                raise ConfigError(f"{where}: {_places(space, overrides, f'plugins.settings.{name}')}: {exc}") from None
            valid.add(key)


def _problem(space: Mapping[str, Any], overrides: Mapping[str, Any], prefix: str, loc: str, msg: str,
             raw: Mapping[str, Any] | None) -> str:
    """``space.<key>[i] = value: message`` for the value at ``prefix.loc`` (``loc`` empty: the
    plugin's settings as a whole)."""
    target = f"{prefix}.{loc}" if loc else prefix
    value: Any = raw or {}
    for part in loc.split(".") if loc else ():
        value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
    shown = "" if value is _MISSING or not loc else f" = {value!r}"
    found = _found(space, overrides, target)
    if len(found) == 1 and (found[0].split("[")[0] == f"space.{target}" or found[0].endswith(f"].{target}")):
        return f"{found[0]}{shown}: {msg}"  # the setting's own key: no need to name it twice
    return f"{' and '.join(found) or 'base'}: {target}{shown}: {msg}"


_MISSING = object()


def _places(space: Mapping[str, Any], overrides: Mapping[str, Any], target: str) -> str:
    return " and ".join(_found(space, overrides, target)) or "base"


def _found(space: Mapping[str, Any], overrides: Mapping[str, Any], target: str) -> list[str]:
    """Where a point's value at ``target`` (a dotted key) comes from: the space entries that set it,
    a section around it or one inside it (``space.<key>[i]``, ``space.<bundle>[i].<key>``, a range's
    ``space.<key>``); none: the base."""
    def touches(key: str) -> bool:
        return key == target or target.startswith(key + ".") or key.startswith(target + ".")

    found = []
    for key, values in space.items():
        if "." in key:
            if touches(key):
                found.append(f"space.{key}" + (_at(values, overrides[key]) if isinstance(values, list) else ""))
            continue
        for i, bundle in enumerate(values):  # a bundle: the entry this point took
            if all(k in overrides and overrides[k] == v for k, v in bundle.items()):
                found += [f"space.{key}[{i}].{k}" for k in bundle if touches(k)]
                break
    return found


def _at(values: list[Any], value: Any) -> str:
    return next((f"[{i}]" for i, v in enumerate(values) if v == value), "")
