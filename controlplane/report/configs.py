"""A sweep's runs as configurations: one per point (its overrides), aggregated over its seeds the way
`sim search` confirms a candidate: its attainment the minimum over its seeds (it must hold on
every seed), its cost the mean. The spread over the seeds is kept (``*_low``/``*_high``), so a
report shows how far one lucky seed is from the rest."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["configurations", "point_id", "search_aggregated_runs", "split_by_seeds"]


def point_id(overrides: Mapping[str, Any]) -> str:
    """The text that names a configuration: its overrides as sorted JSON."""
    return json.dumps(overrides, sort_keys=True, default=str)


def configurations(runs: Sequence[Mapping[str, Any]],
                   cost: Callable[[Mapping[str, Any]], float | None]) -> list[dict[str, Any]]:
    """One entry per configuration of ``runs`` (each with ``id``, ``seed``, ``overrides`` and
    ``summary``), in the order of their first run: ``overrides``, ``runs`` (ids), ``seeds``,
    ``attainment`` (the minimum over its runs), ``attainment_mean``, ``attainment_low``/``_high``,
    ``cost`` (the mean of ``cost(run)`` over its runs), ``cost_low``/``_high``. A value no run has is None."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(point_id(r["overrides"]), []).append(r)
    out = []
    for members in groups.values():
        att = [a for r in members if (a := (r.get("summary") or {}).get("slo_attainment")) is not None]
        costs = [c for r in members if (c := cost(r)) is not None]
        out.append({
            "overrides": members[0]["overrides"], "runs": [r["id"] for r in members],
            "seeds": [r.get("seed") for r in members],
            "attainment": min(att) if att else None, "attainment_mean": sum(att) / len(att) if att else None,
            "attainment_low": min(att) if att else None, "attainment_high": max(att) if att else None,
            "cost": sum(costs) / len(costs) if costs else None,
            "cost_low": min(costs) if costs else None, "cost_high": max(costs) if costs else None,
        })
    return out


def split_by_seeds(configs: Sequence[dict[str, Any]],
                   seeds: Sequence[int] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``configs`` as (those with a finished run for every one of ``seeds``, those missing some), each of
    the latter with ``missing_seeds``. A point of an interrupted sweep, or with a failed run, is only its
    finished seeds: its minimum over them is not the configuration's, so it stays off the front. ``seeds``
    None (a search: a candidate is confirmed over its seeds, or ran one): every configuration is complete."""
    if not seeds:
        return list(configs), []
    complete, partial = [], []
    for c in configs:
        missing = [s for s in seeds if s not in set(c["seeds"])]
        if missing:
            partial.append({**c, "missing_seeds": missing})
        else:
            complete.append(c)
    return complete, partial


def search_aggregated_runs(runs: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Of a search's full-trace runs (``stage`` ``full``: a candidate's run at the selection seed, or ``confirm``),
    those its ``best`` aggregates a candidate over: a confirmed candidate's runs of its confirmation seeds
    (``result["confirm_seeds"]``: its ``confirm`` runs, and its selection run where that seed is one of them), an
    unconfirmed one's selection run. A search stored before ``confirm_seeds`` was (its confirmation reused the
    selection run: seeds 0, 1, 2 with 0 selecting) keeps every run."""
    confirm_seeds = result.get("confirm_seeds")
    if confirm_seeds is None:
        return list(runs)
    confirmed = {point_id(r["overrides"]) for r in runs if r.get("stage") == "confirm"}
    return [r for r in runs if point_id(r["overrides"]) not in confirmed or r.get("stage") == "confirm"
            or r.get("seed") in confirm_seeds]
