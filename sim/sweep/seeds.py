"""Whether a sweep's or a search's seeds changed anything: the runs of one point under several seeds compared."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["PER_RUN", "same_under_every_seed", "seeds_change_nothing"]

#: Summary fields that differ between two runs of the same replay.
PER_RUN = frozenset({"run_id", "wall_s"})


def same_under_every_seed(groups: Iterable[list[dict[str, Any]]]) -> bool | None:
    """``groups``: each point's summaries, one per seed it finished under. Whether every point run under two
    seeds or more gave the same summary under each (run ids and wall times aside); None when none was."""
    compared = [g for g in groups if len(g) > 1]
    if not compared:
        return None
    strip = [[{k: v for k, v in s.items() if k not in PER_RUN} for s in g] for g in compared]
    return all(all(s == g[0] for s in g[1:]) for g in strip)


def seeds_change_nothing(runs: list[dict[str, Any]]) -> bool | None:
    """A sweep's stored runs (``overrides``, ``status``, ``summary``): `same_under_every_seed` over its finished
    points."""
    by_point: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("status") == "finished" and r["summary"]:
            by_point.setdefault(json.dumps(r["overrides"], sort_keys=True, default=str), []).append(r["summary"])
    return same_under_every_seed(by_point.values())
