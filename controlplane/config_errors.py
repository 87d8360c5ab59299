"""A run config's errors, each named by its key and the source that gave the bad value: the file, an option (or
an override), or a ``CONTROLPLANE_*`` environment variable (`controlplane.config.load_config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Environment variables a run's settings read start with this (any case): ``CONTROLPLANE_SEED``,
#: ``CONTROLPLANE_CONTROL__TICK_S``.
ENV_PREFIX = "CONTROLPLANE_"

#: Keys that moved from ``sim`` to ``control`` (they drive live runs too); the old spelling still works.
MOVED_TO_CONTROL = ("tick_s", "metrics_interval_s")


def validation_message(exc: Any, path: str | Path | None, overrides: Any, given_values: Any, file_given: Any,
                       option_names: Mapping[str, str] | None) -> str:
    """The message of a pydantic ``ValidationError`` of a run config: a line per error, its key (or option) and,
    where the value is not the file's, its source. ``overrides`` as given, ``given_values`` with old names moved;
    ``file_given``: the file's values as read."""
    errs = exc.errors()
    # (a command-line option's value: not the file's; an override repeating the file's value, as the daemon passes
    # each deployment of the file back with its worker settings filled in, is the file's)
    given = [_given(given_values, err["loc"]) and not _same_in_file(file_given, given_values, err["loc"])
             for err in errs]
    # (nor these; a list set item by item, CONTROLPLANE_CLUSTER__MODELS__0__REPLICAS, reads as a mapping: not a list)
    env = [[] if mine else env_variables(err["loc"], below=err["type"] == "list_type") for err, mine in zip(errs, given)]
    where = f" in {path}" if path and not all(mine or names for mine, names in zip(given, env)) else ""
    options = option_names or {}
    lines = []
    for err, mine, names in zip(errs, given, env):
        loc = err["loc"]
        key = ".".join(str(p) for p in (loc[:-2] if loc[-1:] == ("[key]",) else loc))
        msg = error_message(err)
        if mine and key in options:
            lines.append(f"{options[key]}: {msg}")
            continue
        if (_old_name_used(overrides, loc) if mine else
                _moved(loc) and any(n.lower().startswith(f"{ENV_PREFIX}sim".lower()) for n in names) if names else
                _old_name_used(file_given, loc)):
            key = f"sim.{loc[1]} (the old name of {key})"
        lines.append((f"{key}: {msg}" if key else msg)
                     + (f" (given as an option or override{f', not in {path}' if path else ''})" if mine else "")
                     + (f" (from the environment: {', '.join(names)}{_list_note(err, names)})" if names else ""))
    return f"invalid configuration{where}:\n  " + "\n  ".join(lines)


#: Errors whose message does not show the value and where it is worth showing: "unable to parse string as a
#: number" says what failed, not what was given ("2s"), "greater than 0" not that it was -1.
_SHOW_VALUE = frozenset({"literal_error", "enum", "string_type", "int_type", "float_type", "bool_type", "dict_type",
                         "list_type", "model_type", "model_attributes_type", "string_pattern_mismatch",
                         "int_parsing", "float_parsing", "bool_parsing",
                         "greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_SECTIONS = frozenset({"dict_type", "model_type", "model_attributes_type"})


def error_message(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error of a config (its ``msg`` with the value received where it helps, and what
    YAML made of it): ``Input should be 'off', 'steady' or 'quantile', got False: YAML reads off/no/yes/on as
    booleans; quote it``; a section left empty says so. Shared by the run config and plugin settings."""
    msg, kind, value = err["msg"], err["type"], err.get("input")
    loc = tuple(err.get("loc") or ())
    if loc[-1:] == ("[key]",):  # a mapping's key: ('sim', 'guardian_tenant_block_rates', 0, '[key]')
        hint = _YAML_BOOLEANS if isinstance(value, bool) else "quote it" if kind == "string_type" else ""
        return f"the key {value!r}: {msg}" + (f": {hint}" if hint else "")
    if kind == "extra_forbidden" and len(loc) == 1 and loc[0] in _RUN_FACTS:  # (a stored run's config, given back)
        return (f"{msg}: {loc[0]} is what a run records beside its config, not a config key (a run's `config` as "
                "`runs show --json` prints it); `controlplane runs config RUN` prints the config it ran with")
    if value is None and kind in _SECTIONS:
        if loc and isinstance(loc[-1], int):
            return "an empty list item (a `-` with nothing under it): give its keys or remove it"
        return "an empty section (nothing under its key, or only comments): give it keys or remove the key"
    if value is None and kind == "list_type":
        return "an empty value (nothing after the key, or only comments): give a list ([] for none) or remove the key"
    if isinstance(value, bool) and kind in _WANTS_TEXT:  # (`gpu: no`; not an unknown key, nor a section or number)
        return f"{msg}, got {value}: {_YAML_BOOLEANS}"
    if value is None and kind not in ("missing", "extra_forbidden"):
        return f"{msg}, got null (nothing after the key, or only comments)"
    if kind not in _SHOW_VALUE:
        return msg
    if isinstance(value, (str, int, float)):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return f"{msg}, got {shown}" + ("; quote it to make it a string" if kind == "string_type" else "")
    if type(value).__name__ in ("date", "datetime"):
        return f"{msg}, got {value} (YAML reads it as a date); quote it"
    return f"{msg}, got a {'list' if isinstance(value, list) else 'mapping' if isinstance(value, dict) else type(value).__name__}"


#: The keys a stored run adds to its config (`controlplane.storage.queries.RUN_FACTS`; not imported: the config
#: loads without the storage package).
_RUN_FACTS = ("trace_read", "latency_files", "process")
_YAML_BOOLEANS = "YAML reads off/no/yes/on (unquoted) as booleans; quote it"
#: Errors of a value where text was expected (a string, one of some words): a boolean there may be an unquoted
#: off/no/yes/on. Not an unknown key's (``extra_forbidden``: the key is the error, whatever its value) nor a
#: section's, a list's or a number's, where quoting would not help.
_WANTS_TEXT = frozenset({"string_type", "literal_error", "enum", "string_pattern_mismatch"})


def _list_note(err: Any, names: list[str]) -> str:
    """What to say of a list section set item by item (``CONTROLPLANE_CLUSTER__MODELS__0__REPLICAS``): it is one
    variable's JSON."""
    section = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
    if not any(n.upper().startswith(section + "__") for n in names):
        return ""
    return f"; a list is set whole, as JSON: {section}='[...]'"


def settings_error_message(exc: Exception) -> str:
    """The message of pydantic-settings' ``SettingsError``: a variable its parser cannot read."""
    field = str(exc).partition('for field "')[2].partition('"')[0]
    names = [k for k in os.environ if k.lower() == (ENV_PREFIX + field).lower()
             or k.lower().startswith((ENV_PREFIX + field + "__").lower())]
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    named = " or ".join(names) or ENV_PREFIX + field.upper()
    return (f"invalid configuration: the environment variable {named} cannot be read (a section's variable holds "
            f"JSON){cause}")


def _given(overrides: dict[str, Any] | None, loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` (an error's location) is one of ``overrides``."""
    if not loc:
        return False  # (the whole config's error: not one value's)
    return _at(overrides or {}, loc) is not _MISSING


def _same_in_file(file_given: Any, overrides: Any, loc: tuple[Any, ...]) -> bool:
    """Whether the file holds the same value at ``loc`` as the overrides (a key refused as extra: the same key)."""
    in_file = _at(file_given or {}, loc)
    return in_file is not _MISSING and in_file == _at(overrides or {}, loc)


_MISSING = object()


def _at(values: Any, loc: tuple[Any, ...]) -> Any:
    """The value at ``loc`` in nested dicts and lists, else ``_MISSING``."""
    node = values
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _MISSING
    return node


def _old_name_used(values: Any, loc: tuple[Any, ...]) -> bool:
    """Whether ``values`` (one source's, as given) set the value at ``loc`` (``control.tick_s``) by its old name."""
    if not _moved(loc) or not isinstance(values, dict):
        return False
    sim, control = values.get("sim"), values.get("control")
    return isinstance(sim, dict) and loc[1] in sim and not (isinstance(control, dict) and loc[1] in control)


def _moved(loc: tuple[Any, ...]) -> bool:
    """Whether ``loc`` is at or under a key that moved from ``sim`` to ``control`` (``control.tick_s``)."""
    return len(loc) >= 2 and loc[0] == "control" and loc[1] in MOVED_TO_CONTROL


def env_variables(loc: tuple[Any, ...], below: bool = False) -> list[str]:
    """The ``CONTROLPLANE_*`` environment variables, as set, that give the value at ``loc`` (an error's
    location) or a section holding it: ``CONTROLPLANE_SEED``, ``CONTROLPLANE_SIM__TICK_S``, ``CONTROLPLANE_SIM``;
    for ``control.tick_s``, also its old name's ``CONTROLPLANE_SIM__TICK_S``; ``below``: also those that give a
    part of it (``CONTROLPLANE_CLUSTER__MODELS__0__REPLICAS`` for ``cluster.models``)."""
    set_names = {k.lower(): k for k in os.environ if k.lower().startswith(ENV_PREFIX.lower())}
    names = [(ENV_PREFIX + "__".join(str(p) for p in loc[:n])).lower() for n in range(1, len(loc) + 1)]
    if _moved(loc):
        names += [f"{ENV_PREFIX}sim".lower(), f"{ENV_PREFIX}sim__{loc[1]}".lower()]
    found = [set_names[n] for n in names if n in set_names]
    if below and loc:
        under = (ENV_PREFIX + "__".join(str(p) for p in loc) + "__").lower()
        found += sorted(name for low, name in set_names.items() if low.startswith(under))
    return found


def environment_note(key: str) -> str:
    """`` (from the environment: CONTROLPLANE_...)`` when a ``CONTROLPLANE_*`` variable gives the value at the dotted
    ``key`` (``plugins.settings.my-cap.max_prompt``): the variable of that key, or of a section whose JSON holds it;
    else "". For errors found after the config was built (a plugin's settings)."""
    import json

    loc = tuple(key.split("."))
    found = []
    for name in env_variables(loc):
        depth = name.count("__") + 1  # CONTROLPLANE_PLUGINS__SETTINGS: the first two parts
        value: Any = os.environ[name]
        if depth < len(loc):
            try:
                value = json.loads(value)
            except ValueError:
                continue
            for part in loc[depth:]:
                value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is not _MISSING:
            found.append(name)
    return f" (from the environment: {', '.join(found)})" if found else ""


_MISSING = object()


def shadowed_values(file_values: Any, overrides: Any) -> list[tuple[str | None, tuple[str, ...], Any]]:
    """The values a merge of the sources would drop unseen: where a source holds something that is not a mapping
    (``sim: exact`` in the file, ``CONTROLPLANE_SLO=1.0``) and one above it sets keys inside (``--until``,
    ``CONTROLPLANE_SIM__UNTIL_S``), the merge keeps those keys and forgets the value, which alone is an error.
    Each as (the environment variable that gave it, or None for the file; its key's path; the value)."""
    import json

    env: dict[tuple[str, ...], tuple[str, Any]] = {}  # each CONTROLPLANE_ variable by its path: (name, its value)
    for name, raw in os.environ.items():
        if name.lower().startswith(ENV_PREFIX.lower()) and len(name) > len(ENV_PREFIX):
            try:
                value: Any = json.loads(raw)
            except ValueError:
                value = raw
            env[tuple(name[len(ENV_PREFIX):].lower().split("__"))] = (name, value)

    def env_mapping(path: tuple[str, ...]) -> bool:
        return any(p[:len(path)] == path and (len(p) > len(path) or isinstance(v, dict)) for p, (_, v) in env.items())

    def override_mapping(path: tuple[str, ...]) -> bool:
        node = overrides
        for part in path:
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        return isinstance(node, dict)

    found: list[tuple[str | None, tuple[str, ...], Any]] = []

    def walk(values: Any, path: tuple[str, ...]) -> None:
        for key, value in values.items():
            here = (*path, str(key))
            if isinstance(value, dict):
                walk(value, here)
            elif env_mapping(here) or override_mapping(here):
                found.append((None, here, value))

    walk(file_values if isinstance(file_values, dict) else {}, ())
    for path, (name, value) in env.items():  # the environment under the options
        if not isinstance(value, dict) and override_mapping(path):
            found.append((name, path, value))
    return found


def shadowed_message(found: list[tuple[str | None, tuple[str, ...], Any]], validate: Any,
                     path: str | Path | None) -> str | None:
    """The errors `shadowed_values` found, worded as each value's own error alone (``validate``: the run config's
    ``model_validate``), or None where none of them is an error (a list an environment variable sets item by item
    has its own)."""
    lines, in_file = [], False
    for name, key, value in found:
        partial: Any = value
        for part in reversed(key):
            partial = {part: partial}
        try:
            validate(partial)
            continue
        except Exception as exc:  # (pydantic's ValidationError)
            errors = [e for e in getattr(exc, "errors", list)() if tuple(str(p) for p in e["loc"]) == key]
        for err in errors:
            in_file = in_file or name is None
            lines.append(f"{'.'.join(key)}: {error_message(err)}"
                         + (f" (from the environment: {name})" if name is not None else ""))
    if not lines:
        return None
    return f"invalid configuration{f' in {path}' if in_file and path else ''}:\n  " + "\n  ".join(lines)
