"""Dotted config keys (``cluster.models.0.replicas``): how a sweep spec's space and base, and
`controlplane.config.load_config`'s overrides, set one key of a nested config (list items by index).

A nested override (``{"cluster": {"models": [...]}}``) sets a list whole, as the environment's variables do.
`replaced_list_items` finds where such a list would drop keys the config file gives an item (an override
``[{"replicas": 2}]`` in place of a file's deployment that names its latency model), which `load_config`
refuses, pointing to the dotted key that changes only that item's key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from controlplane.errors import ConfigError

__all__ = ["apply_dotted", "flat_keys", "replaced_list_items", "split_dotted", "with_dotted"]


def _index(container: list, part: str, path: str) -> int:
    try:
        i = int(part)
    except ValueError:
        raise ConfigError(f"{path}: {part!r} is not a list index") from None
    if not 0 <= i < len(container):
        raise ConfigError(f"{path}: index {i} out of range (the list has {len(container)} items)")
    return i


def apply_dotted(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with ``{dotted key: value}`` set (list items by index:
    ``cluster.models.0.replicas``); missing mapping keys are created (validation names them)."""
    out = copy.deepcopy(config)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            path = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_index(node, part, path)]
            elif isinstance(node, dict):
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                node = nxt
            else:
                raise ConfigError(f"{dotted}: {'.'.join(parts[:depth])} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, dotted)] = copy.deepcopy(value)
        elif isinstance(node, dict):
            node[last] = copy.deepcopy(value)
        else:
            raise ConfigError(f"{dotted}: {'.'.join(parts[:-1])} is a value, not a section")
    return out


def split_dotted(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the nested overrides, the dotted ones): a top-level key holding a dot is a dotted key."""
    nested = {k: v for k, v in overrides.items() if not (isinstance(k, str) and "." in k)}
    return nested, {k: v for k, v in overrides.items() if k not in nested}


def flat_keys(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested mappings as ``{dotted key: value}`` under ``prefix`` (lists and empty mappings are values)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            out.update(flat_keys(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def replaced_list_items(file_values: Any, overrides: Any, path: str | Path | None, key: str = "") -> str | None:
    """The error of a nested override whose list of mappings replaces the config file's list at the same key with
    an item that lacks keys the file's item gives (they would be dropped silently: the deployment's latency model,
    its name), saying what it drops and the dotted keys that change only what the override names; None when none."""
    if isinstance(file_values, dict) and isinstance(overrides, dict):
        for k, v in overrides.items():
            if k in file_values and (why := replaced_list_items(file_values[k], v, path,
                                                                  f"{key}.{k}" if key else str(k))):
                return why
        return None
    if not (isinstance(file_values, list) and isinstance(overrides, list)):
        return None
    for i, (mine, theirs) in enumerate(zip(overrides, file_values)):
        if isinstance(mine, dict) and isinstance(theirs, dict) and (dropped := [k for k in theirs if k not in mine]):
            in_file = f" in {path}" if path else ""
            return (f"invalid configuration:\n  {key}: an override's list replaces the list{in_file} whole, and its "
                    f"item {i} ({mine!r}) would drop keys the file's item {i} gives ({', '.join(dropped)}); to change only the keys it names, give dotted keys: "
                    f"{flat_keys(mine, f'{key}.{i}')!r}; to replace the list, give the dotted key {key!r}: "
                    f"{{{key!r}: [...]}}")
    return None


def with_dotted(config: Any, dotted: dict[str, Any]) -> Any:
    """A run config with dotted overrides set (`apply_dotted`, over what every source gave) and checked again:
    a bad key or value is a `ConfigError` naming it."""
    from pydantic import ValidationError

    from controlplane.config_errors import error_message

    try:
        return type(config).model_validate(apply_dotted(config.model_dump(), dotted))
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {error_message(err)} (given as an override)"
                 for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
