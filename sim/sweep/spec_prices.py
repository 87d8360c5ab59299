"""A search spec's GPU prices, checked before any run starts.

A search ranks its candidates by cost (`controlplane.report.cost`), so a point whose GPU type has
no price (``cluster.gpu_prices`` nor the defaults) cannot be ranked: the search failed on it after
reading the trace. :func:`check_gpu_prices` refuses such a spec at once instead, naming the spec,
the point and the config key to set. A sweep needs no price: its runs leave the cost unknown.
"""

from __future__ import annotations

import json

from controlplane.errors import ConfigError

__all__ = ["check_gpu_prices"]

_PRICED = ("cluster.models", "cluster.gpu_prices")  # the keys of a point that decide its GPUs and their prices


def check_gpu_prices(loaded, where: str) -> None:
    """Refuse (`ConfigError`, one line) a spec of which some point runs a GPU type without a price,
    when costs are money (the cost model is installed; in GPU-hours every GPU has one)."""
    from controlplane.report.cost import cost_unit
    from sim.sweep.spec import apply_dotted

    if cost_unit() != "usd":
        return
    from controlplane.hardware.cost import NoPriceError, gpu_price_per_hour

    seen: set[str] = set()
    for overrides in loaded.spec.points():
        priced = {k: v for k, v in overrides.items() if k == "cluster" or k.startswith(_PRICED)}
        key = json.dumps(priced, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            cluster = apply_dotted(loaded.base_config, priced).get("cluster") or {}
        except ConfigError:
            continue  # (a bad key: the point's run says so)
        for model in cluster.get("models") or []:
            try:
                gpu_price_per_hour(model.get("gpu", "a100-80gb"), cluster.get("gpu_prices"))
            except NoPriceError as exc:
                shown = {k: v for k, v in priced.items() if _names_gpu(k)}  # (the values that chose the GPU)
                point = f"sweep point {shown}" if shown else "base"
                raise ConfigError(f"{where}: {point}: {exc} (a search ranks its candidates by cost)") from None


def _names_gpu(key: str) -> bool:
    """Whether a point's key sets a GPU type or a price: ``cluster.models.0.gpu``, ``cluster.gpu_prices.l4``,
    or a whole model, its list or the cluster (not ``cluster.models.0.replicas``)."""
    return key.endswith(".gpu") or key.startswith("cluster.gpu_prices") or key == "cluster" or (
        key.startswith("cluster.models") and key.count(".") <= 2)
