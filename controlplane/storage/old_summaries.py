"""Summaries stored by older releases, completed from their run's row (`get_run`, `list_runs`).

Revision 0002's releases stored a run's GPU-seconds but not its GPU-hours or cost, nor the SLO targets its
attainment was counted against (its config's ``slo`` holds them): `runs show` printed the attainment without
its targets and no GPU-hours, `runs compare` "GPU-hours -" beside a newer run. What today's summary has and
can be derived from the row is added, and named in the summary's ``derived_keys``: ``gpu_hours``
(``gpu_seconds / 3600``, as a run's end computes it) and ``slo_targets`` (the config's ``slo`` targets that
are set, as a run's end stores them). A cost cannot be derived (the config holds no GPU prices): ``cost_usd``
is None and ``cost_error`` says why, as for a run whose GPU had no price. Summaries that have them, a running
run's (None) and a crashed run's (no ``slo_attainment``) are as stored.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["completed"]

#: Why an old run's cost is not known (its summary's ``cost_error``).
NO_PRICES: Final = "its release priced no GPU time (no cluster.gpu_prices in its config)"


def completed(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a ``run`` row as a dict) with its summary completed as the module says; ``row`` itself where
    nothing is missing."""
    summary, config = row.get("summary"), row.get("config")
    if not isinstance(summary, dict) or "slo_attainment" not in summary or not isinstance(config, dict):
        return row
    derived: dict[str, Any] = {}
    if "gpu_hours" not in summary and isinstance(summary.get("gpu_seconds"), (int, float)):
        derived["gpu_hours"] = float(f"{summary['gpu_seconds'] / 3600.0:.9g}")
    slo = config.get("slo")
    if "slo_targets" not in summary and isinstance(slo, dict):
        derived["slo_targets"] = {k: v for k, v in slo.items() if v is not None}
    if not derived:
        return row
    unpriced = ("cost_usd" not in summary and "gpu_hours" in derived
                and "gpu_prices" not in (config.get("cluster") or {}))
    cost = {"cost_usd": None, "cost_error": NO_PRICES} if unpriced else {}
    return {**row, "summary": {**summary, **derived, **cost, "derived_keys": sorted(derived)}}
