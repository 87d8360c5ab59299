"""The clairvoyant bound of `benchmarks/autoscaling.py --clairvoyant`: what a scaler that knew the
trace in advance would spend.

From the static runs (every fixed count from 1 to static peak, all replicas ready), each window of
``window_s`` gets the fewest replicas at which the requests arriving in it met the SLO at the
target share. The timetable starts each window's replicas ``lead_s`` (the cold start and a tick)
before the window opens and keeps them until it closes; it is replayed with `scheduled-replicas`,
cold starts and all, from the same start as every policy. No online policy can know the future, so
this is not a policy to deploy: it says how much of static peak's GPU-hours perfect foresight at
this granularity saves on this trace, and so how much is left for a forecaster to win.
"""

from __future__ import annotations

import math


def window_needs(outcomes: dict[int, list[tuple[float, bool]]], window_s: float, target: float) -> dict[int, int]:
    """Window index -> the fewest replica count (a key of ``outcomes``: count -> [(arrival s, met the
    SLO)]) whose requests arriving in that window met the SLO at ``target``; the largest count tried
    where none did. Windows without arrivals are left out."""
    counts = sorted(outcomes)
    tallies = {}  # count -> window -> [met, requests], one pass over each count's outcomes
    for n in counts:
        per = tallies[n] = {}
        for a, ok in outcomes[n]:
            t = per.setdefault(math.floor(a / window_s), [0, 0])
            t[0] += ok
            t[1] += 1
    needs = {}
    for w in tallies[counts[-1]]:
        needs[w] = counts[-1]
        for n in counts:
            met, total = tallies[n].get(w, (0, 0))
            if total and met / total >= target:
                needs[w] = n
                break
    return needs


def timetable(needs: dict[int, int], window_s: float, lead_s: float, floor: int = 1) -> list[tuple[float, int]]:
    """The step schedule ``[(from second, replicas)]``: at time t, the most any window overlapping
    [t, t + lead_s] needs (at least ``floor``), so replicas are requested ``lead_s`` before their
    window opens and released when it closes."""
    if not needs:
        return [(0.0, floor)]
    last = max(needs)
    edges = sorted({0.0, *(max(0.0, w * window_s - lead_s) for w in needs), *(w * window_s for w in needs),
                    *((w + 1) * window_s for w in needs)})
    table: list[tuple[float, int]] = []
    for t in edges:
        first, end = math.floor(t / window_s), math.floor((t + lead_s) / window_s)
        count = max([floor, *(needs.get(w, 0) for w in range(first, min(end, last) + 1))])
        if not table or table[-1][1] != count:
            table.append((round(t, 3), count))
    return table


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_clairvoyant.py", "autoscaling.py --clairvoyant [--clairvoyant-window S ...]"))
