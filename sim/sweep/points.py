"""A sweep's runs aggregated by point over its seeds: what `sim sweep` prints under its table of runs and
lists in ``--json``'s ``points``.

A run is one seed of a point; a point's seeds say how far one seed's figures are from another's. Only
finished runs with a summary count (a failed or interrupted run of a point has no figures): ``n`` is how many,
and the point's mean, minimum and standard deviation are over them (the SD only where ``n >= 2``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["point_aggregates"]


def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def _gpu_hours(summary: Mapping[str, Any]) -> float | None:
    """As the table of runs shows it: the run's GPU-seconds over 3600 (its guardians' apart)."""
    return None if summary.get("gpu_seconds") is None else float(summary["gpu_seconds"]) / 3600


def _cost(summary: Mapping[str, Any]) -> float | None:
    """As the table of runs shows it: the total cost with guardians (their GPUs too), else the run's ``cost_usd``."""
    if "guardian_gpu_hours" in summary:
        return summary.get("total_cost_usd")
    return summary.get("cost_usd")


def _stats(name: str, values: list[float], with_min: bool = False) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"{name}_mean": _r(sum(values) / len(values)) if values else None}
    if with_min:
        out[f"{name}_min"] = _r(min(values)) if values else None
    out[f"{name}_sd"] = _r(statistics.stdev(values)) if len(values) > 1 else None
    return out


def point_aggregates(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per point of ``runs`` (`sim.sweep.store.sweep_runs`'s: ``id``, ``seed``, ``status``, ``summary``,
    ``overrides``), in the order of its first run: ``overrides``, ``runs`` (the ids of its finished runs),
    ``seeds`` (theirs), ``n`` (how many), ``not_finished`` (its other runs: failed, interrupted, crashed),
    ``attainment_mean``/``_min``/``_sd`` (its runs' ``slo_attainment``), ``gpu_hours_mean``/``_sd`` and
    ``cost_usd_mean``/``_sd`` (with guardians: the total cost, theirs included). A figure no finished run has is
    None; an SD needs two runs (None with one)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r["overrides"], sort_keys=True, default=str), []).append(r)
    out = []
    for members in groups.values():
        done = [r for r in members if r.get("status") == "finished" and r.get("summary")]
        summaries = [r["summary"] for r in done]
        attainment = [float(a) for s in summaries if (a := s.get("slo_attainment")) is not None]
        gpu_hours = [g for s in summaries if (g := _gpu_hours(s)) is not None]
        costs = [float(c) for s in summaries if (c := _cost(s)) is not None]
        out.append({"overrides": members[0]["overrides"], "runs": [r["id"] for r in done],
                    "seeds": [r.get("seed") for r in done], "n": len(done), "not_finished": len(members) - len(done),
                    **_stats("attainment", attainment, with_min=True), **_stats("gpu_hours", gpu_hours),
                    **_stats("cost_usd", costs)})
    return out
