"""What a run cost: money from ``controlplane.hardware.cost`` (a price per GPU-hour per GPU type,
``cluster.gpu_prices``) when that module is installed, else GPU-hours. Searches and reports
say which (``cost_unit()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["cost_unit", "estimated_cost", "gpu_price", "run_cost", "unknown_cost_reason"]


def _pricing() -> Any:
    try:
        from controlplane.hardware import cost
    except ImportError:
        return None
    return cost


def cost_unit() -> str:
    """``usd`` (money from the cost model) or ``gpu_hours`` (no cost model installed)."""
    return "usd" if _pricing() is not None else "gpu_hours"


def _prices(config: Mapping[str, Any]) -> Mapping[str, float] | None:
    return (config.get("cluster") or {}).get("gpu_prices")


def _gpu_mix(config: Mapping[str, Any]) -> dict[str, float]:
    """GPUs per GPU type at the start of the run (initial replicas x GPUs per replica)."""
    mix: dict[str, float] = {}
    for m in (config.get("cluster") or {}).get("models") or []:
        gpus = float(m.get("replicas", 0)) * float(m.get("gpus_per_replica", 1))
        mix[m.get("gpu", "a100-80gb")] = mix.get(m.get("gpu", "a100-80gb"), 0.0) + gpus
    return mix


def gpu_price(config: Mapping[str, Any], gpu: str) -> float | None:
    """USD per GPU-hour of ``gpu`` at the run config's prices (and the defaults); None without a price."""
    pricing = _pricing()
    if pricing is None:
        return None
    try:
        return float(pricing.gpu_price_per_hour(gpu, _prices(config)))
    except KeyError:  # (`NoPriceError`)
        return None


def run_cost(config: Mapping[str, Any], summary: Mapping[str, Any]) -> float | None:
    """A finished run's cost in ``cost_unit()``: its GPU-seconds by GPU type priced (or in hours). None
    when not known: no GPU-seconds in its summary, or a GPU type with no price (`unknown_cost_reason`
    says which), as `runs show` and `runs compare` leave it unknown."""
    try:
        return _run_cost(config, summary)
    except KeyError:  # (`NoPriceError`: a GPU type neither the run's prices nor the defaults price)
        return None


def unknown_cost_reason(config: Mapping[str, Any], summary: Mapping[str, Any]) -> str | None:
    """Why `run_cost` is None for a run with GPU-seconds (the missing price, naming the key to set); None otherwise."""
    try:
        _run_cost(config, summary)
    except KeyError as exc:
        return str(exc)
    return None


def _run_cost(config: Mapping[str, Any], summary: Mapping[str, Any]) -> float | None:
    gpu_seconds = summary.get("gpu_seconds")
    if gpu_seconds is None:
        return None
    pricing = _pricing()
    if pricing is None:
        return float(gpu_seconds) / 3600.0
    by_gpu = summary.get("gpu_seconds_by_gpu")
    if not by_gpu:  # an older summary: split its GPU-seconds by the initial GPU mix
        mix = _gpu_mix(config)
        total = sum(mix.values())
        by_gpu = {g: float(gpu_seconds) * n / total for g, n in mix.items()} if total else {}
    return float(pricing.run_cost(by_gpu, _prices(config)))


def estimated_cost(config: Mapping[str, Any], duration_s: float) -> float:
    """The cost of holding the initial replicas for ``duration_s``: what a run that stopped early
    (no GPU-seconds of its own) is ranked by."""
    pricing = _pricing()
    total = 0.0
    for gpu, n in _gpu_mix(config).items():
        price = 1.0 if pricing is None else pricing.gpu_price_per_hour(gpu, _prices(config))
        total += n * duration_s / 3600.0 * price
    return total
