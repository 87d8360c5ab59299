"""A sweep spec's trace transforms as axes of its space.

The space may sweep the trace's transforms (``trace.rate_scale: [1, 3]``, any key of `TRACE_AXES`): each
point's trace is the spec's ``trace:`` with the point's ``trace.*`` values set (:func:`point_trace`), read
once per seed and per such values (``sim.sweep.run``); the point's key holds them as it holds its config
keys. The trace's path, format and options are not axes: a sweep replays one file, read one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controlplane.errors import ConfigError

if TYPE_CHECKING:
    from sim.sweep.spec import LoadedSpec, TraceSpec

__all__ = ["TRACE_AXES", "check_no_trace_axes", "check_point_traces", "check_trace_axes", "config_overrides",
           "is_trace_key", "point_trace", "trace_overrides"]

PREFIX = "trace."
#: The ``trace:`` keys a space may sweep (as ``trace.<key>``): the transforms of `sim replay`.
TRACE_AXES = ("window_start_s", "window_end_s", "speed_up", "repeat", "rate_scale", "rate_profile", "copies",
              "limit", "prompt_scale", "output_scale", "max_prompt_tokens", "max_output_tokens")


def is_trace_key(key: str) -> bool:
    return key.startswith(PREFIX)


def config_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A point's overrides of its run config (its ``trace.*`` keys left out)."""
    return {k: v for k, v in overrides.items() if not is_trace_key(k)}


def trace_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A point's ``trace.*`` values, by their ``trace:`` key (``{"rate_scale": 3}``); empty when none."""
    return {k.removeprefix(PREFIX): v for k, v in overrides.items() if is_trace_key(k)}


def check_trace_axes(space: Mapping[str, Any]) -> None:
    """Refuse (`ValueError`, naming the space's key) a ``trace`` key of the space that is not a transform."""
    for key, values in space.items():
        named = [key] if "." in key else [k for v in (values if isinstance(values, list) else ())
                                          if isinstance(v, dict) for k in v]
        for k in named:
            if not is_trace_key(k) or k.removeprefix(PREFIX) in TRACE_AXES:
                continue
            at = f"space.{key}" if k == key else f"space.{key}: {k}"
            if k in ("trace.path", "trace.format") or k.startswith("trace.options"):
                raise ValueError(f"{at}: a sweep replays one trace, read one way: its path, format and reader options "
                                 "are the spec's `trace:` (write one spec per trace and compare their sweeps with "
                                 "`controlplane runs compare --a-sweep A --b-sweep B`); the space may sweep the "
                                 f"trace's transforms: {', '.join(PREFIX + a for a in TRACE_AXES)}")
            raise ValueError(f"{at}: not a trace transform; the space may sweep "
                             f"{', '.join(PREFIX + a for a in TRACE_AXES)}")


def point_trace(trace: TraceSpec, overrides: Mapping[str, Any]) -> TraceSpec:
    """The trace a point replays: ``trace`` with the point's ``trace.*`` values set (validated as the spec's
    ``trace:`` is: `ValidationError`)."""
    values = trace_overrides(overrides)
    if not values:
        return trace
    return type(trace)(**{**trace.model_dump(exclude_unset=True), **values})


def check_point_traces(loaded: LoadedSpec, where: str, points: list[dict[str, Any]]) -> None:
    """Refuse (`ConfigError`: ``<spec>: sweep point {'trace.rate_scale': 0}: trace.rate_scale must be ...``)
    the first point whose trace transforms a replay would refuse; each distinct set of values once."""
    seen: set[str] = set()
    for overrides in points:
        mine = {k: v for k, v in overrides.items() if is_trace_key(k)}
        if not mine or (text := repr(sorted(mine.items()))) in seen:
            continue
        seen.add(text)
        try:
            point_trace(loaded.spec.trace, mine)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                msg = e["msg"].removeprefix("Value error, ")
                loc = ".".join(str(p) for p in e["loc"])
                problems.append(f"trace.{loc}: {msg}" if loc else msg)
            raise ConfigError(f"{where}: sweep point {mine}: {'; '.join(problems)}") from None


def check_no_trace_axes(loaded: LoadedSpec, where: str) -> None:
    """Refuse (`ConfigError`) a search over a space that sweeps the trace: a search ranks its candidates'
    costs on one traffic, and a candidate on thinner traffic would be cheaper for that alone."""
    keys = [k for k in loaded.spec.space if is_trace_key(k)] + [
        f"{key}: {k}" for key, values in loaded.spec.space.items() if "." not in key
        for v in values if isinstance(v, dict) for k in v if is_trace_key(k)]
    if keys:
        raise ConfigError(f"{where}: space.{keys[0]}: a search finds the cheapest configuration for one traffic; "
                          "set the trace's transforms in `trace:` and run one search for each (a sweep, "
                          "`controlplane sim sweep`, takes them as axes of its space)")
