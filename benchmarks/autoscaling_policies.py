"""The autoscalers benchmarks/autoscaling.py replays (the installed `cp_scale` plugins), their settings from the
command line, and how their scaling events are counted (oscillations, reversals within each one's own window)."""

from __future__ import annotations

import json
from itertools import pairwise

#: Each policy's own stabilisation window: an up then down within it is an oscillation. Other
#: autoscalers: the first of these settings they have, else 300 s.
WINDOWS_S = {"seed-autoscaler": 300.0, "hpa": 300.0, "kpa": 60.0, "slo-planner": 300.0}
WINDOW_SETTINGS = ("scale_down_stabilization_s", "scale_down_delay_s", "stabilization_window_s", "hold_s",
                   "stable_window_s")


def oscillations(events: list[tuple[float, int, int]], window_s: float) -> int:
    """Scale-ups followed by a scale-down within ``window_s``."""
    return sum(1 for (t0, a0, b0), (t1, a1, b1) in pairwise(events)
               if b0 > a0 and b1 < a1 and t1 - t0 < window_s)


def reversals(events: list[tuple[float, int, int]], window_s: float) -> int:
    """Scale-downs followed by a scale-up within ``window_s`` (a replica released, then one started again)."""
    return sum(1 for (t0, a0, b0), (t1, a1, b1) in pairwise(events)
               if b0 < a0 and b1 > a1 and t1 - t0 < window_s)


def _scale_plugins() -> dict[str, bool]:
    """Installed plugins with a `cp_scale` implementation: name -> whether it is a wrapper."""
    from controlplane.hookspecs import PROJECT_NAME
    from controlplane.plugin_manager import discover_plugins

    out = {}
    for name, info in discover_plugins().items():
        impl = getattr(info.target, "cp_scale", None)
        if impl is not None:
            out[name] = bool((getattr(impl, f"{PROJECT_NAME}_impl", None) or {}).get("wrapper"))
    return out


def autoscalers() -> list[str]:
    """Installed plugins that decide `cp_scale` (not wrappers), the ones that read no load (`fixed-replicas`,
    `scheduled-replicas`) left out."""
    names = [name for name, wrapper in _scale_plugins().items()
             if not wrapper and name not in ("fixed-replicas", "scheduled-replicas")]
    known = [n for n in WINDOWS_S if n in names]
    return known + sorted(set(names) - set(known))


def scale_wrappers() -> list[str]:
    """Installed `cp_scale` wrappers (`scaling-rules`, `shadow`): a --config's are left out of every run, so that
    its bounds do not clamp the static baselines and each policy is benchmarked as itself."""
    return sorted(name for name, wrapper in _scale_plugins().items() if wrapper)



def takes(policy: str, settings: dict) -> dict:
    """The ``settings`` ``policy``'s Settings has fields for (`fixed-replicas` and `scheduled-replicas` take no bounds:
    their count is --start-replicas, or their schedule)."""
    from controlplane.plugin_manager import discover_plugins

    fields = getattr(getattr(discover_plugins()[policy].target, "Settings", None), "model_fields", {})
    return {k: v for k, v in settings.items() if k in fields}


def split_bounds(policy: str, bounds: dict) -> tuple[dict, dict]:
    """``bounds`` (``min_replicas``, ``max_replicas``) as (those ``policy``'s own settings take, those the
    `scaling-rules` wrapper applies around it instead): a third-party autoscaler without such settings is bounded
    as the built-in ones bound themselves. `fixed-replicas` and `scheduled-replicas` get neither (their count is
    --start-replicas, or their schedule)."""
    own = takes(policy, bounds)
    if policy in ("fixed-replicas", "scheduled-replicas"):
        return own, {}
    return own, {k: v for k, v in bounds.items() if k not in own}


def window_s(policy: str, settings: dict) -> float:
    """The window of ``policy``'s oscillations and reversals: WINDOWS_S's for a built-in one run with none of
    WINDOW_SETTINGS set; else the first of WINDOW_SETTINGS it has (its setting, or its default), else 300 s (a
    third-party policy without such a setting, and `scheduled-replicas`, the clairvoyant bound)."""
    if policy in WINDOWS_S and not any(k in settings for k in WINDOW_SETTINGS):
        return WINDOWS_S[policy]
    from controlplane.plugin_manager import discover_plugins

    target = discover_plugins()[policy].target
    effective = {**{k: f.default for k, f in target.Settings.model_fields.items()}, **settings}
    return next((float(effective[k]) for k in WINDOW_SETTINGS if effective.get(k) is not None), 300.0)


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``policy.key=value`` (value as JSON, else a string) -> {policy: {key: value}}."""
    out: dict[str, dict] = {}
    for item in items:
        lhs, _, value = item.partition("=")
        policy, _, key = lhs.partition(".")
        if not key or not _:
            raise SystemExit(f"--set wants POLICY.KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(policy, {})[key] = parsed
    return out


AUTOSCALERS = {"fixed-replicas", "seed-autoscaler", "hpa", "kpa", "scheduled-replicas"}


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_policies.py", "autoscaling.py [--policies P,... --set POLICY.KEY=VALUE ...]"))
