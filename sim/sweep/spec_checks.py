"""Every point of a sweep spec checked as `controlplane sim replay` checks its config, before the sweep starts.

A point's config was only validated (`LoadedSpec.run_config`), so what a replay refuses at its start (a latency
model's default ``tensor_parallel`` that is not the swept ``gpus_per_replica``, a GPU the memory plan does not
know, a latency setting its model refuses) failed every such run mid-sweep, or ran and stored a run without its
memory plan. :func:`check_points` runs `sim.run_checks.checked_run_config` on each point's config (each
distinct ``cluster`` and ``plugins`` once: most points vary other keys, or only the replicas), naming the spec
and the point.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from controlplane.config import RunConfig
from controlplane.errors import ConfigError, ControlPlaneError

if TYPE_CHECKING:
    from sim.sweep.spec import LoadedSpec

__all__ = ["check_points"]


def check_points(loaded: LoadedSpec, where: str, points: list[dict[str, Any]]) -> None:
    """Refuse (`ConfigError`: ``<spec>: sweep point {<key>: <value>}: <the replay's message>``) the first point
    whose run would be refused at its start; nothing is stored or run."""
    from sim.run_checks import checked_run_config

    seed = loaded.spec.seeds[0]
    seen: set[str] = set()
    for overrides in points:
        try:
            data = loaded.run_config(overrides, seed)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        key = json.dumps([{k: v for k, v in m.items() if k != "replicas"} for m in data["cluster"]["models"]]
                         + [data["cluster"]["gpu_prices"], data["plugins"]], sort_keys=True, default=str)
        if key in seen:  # (the replicas decide nothing the checks look at)
            continue
        seen.add(key)
        try:
            checked_run_config(RunConfig(**data), simulated=True, warn=lambda _: None, database=False)
        except (ControlPlaneError, ValueError, LookupError) as exc:  # (a GPU the memory plan lacks: a KeyError)
            raise ConfigError(f"{where}: sweep point {overrides}: {exc}") from None
