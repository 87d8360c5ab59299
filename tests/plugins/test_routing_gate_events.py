"""The weighted routers and prefix-affinity pass the run's events to their `ReadinessGate`: it
answers "is a candidate starting?" from the replicas it keeps, and they route exactly as when the
gate looks at every candidate's state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.events import WorkerChanged
from controlplane.testing import ScaleCycle, make_trace, replay_with
from plugins.prefix_cache import PrefixAffinity
from plugins.routing_wait import ReadinessGate
from plugins.weighted_routing import PowerOfTwo, PrefixOnly, WeightedRouter


class _CountingGate(ReadinessGate):
    """A gate that checks each answer against the candidates' states and counts those it gave
    from the replicas kept from events; ``fed=False`` drops the events (it looks every time).
    Differences are counted, not asserted: an assert inside a hook is recorded as a plugin error."""

    def __init__(self, fed: bool) -> None:
        super().__init__()
        self.fed = fed
        self.asked = self.from_events = self.with_starting = 0
        self.differ: list[tuple[float, bool, bool]] = []

    def observe(self, ctx, event) -> None:
        if self.fed:
            super().observe(ctx, event)

    def all_ready(self, ctx, workers) -> bool:
        got = super().all_ready(ctx, workers)
        want = not any(self.cold(ctx.now_s, w) for w in workers)  # warm initial replicas count as ready
        if got != want:
            self.differ.append((ctx.now_s, got, want))
        held = (self._accepting or {}).get(workers[0].model, ()) if workers else ()
        self.asked += 1
        self.from_events += bool(self._fed and len(held) == len(workers) and workers[-1].worker_id in held)
        self.with_starting += not want
        return got


def _trace():
    # prefix blocks from a few shared "system prompts" plus the request's own: prefix-affinity routes them
    return [replace(t, hash_ids=(i % 7, 100 + i % 3, 1000 + i), hash_block_tokens=16)
            for i, t in enumerate(make_trace(600, qps=12.0, seed=4))]


def _run(router_cls, attr: str, fed: bool):
    router = router_cls()
    gate = _CountingGate(fed)
    setattr(router, attr, gate)
    res = replay_with(router, ScaleCycle(), trace=_trace(),
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0}]})
    decisions = [(d.time_s, d.hook, d.plugin, d.action, d.subject, d.reason, d.payload) for d in res.decisions]
    return res, gate, decisions


@pytest.mark.parametrize(("router_cls", "attr"), [(WeightedRouter, "gate"), (PowerOfTwo, "gate"),
                                                  (PrefixOnly, "gate"), (PrefixAffinity, "_gate")])
def test_routers_choose_the_same_replicas_with_and_without_the_worker_events(router_cls, attr):
    res, gate, decisions = _run(router_cls, attr, fed=True)
    assert res.summary["num_completed"] == 600 and res.summary["num_plugin_errors"] == 0
    kinds = {e.kind for e in res.events if isinstance(e, WorkerChanged)}
    assert {"starting", "ready", "draining", "stopped"} <= kinds
    assert gate.differ == []
    assert gate.with_starting > 20  # requests arrived while a replica was starting
    assert gate.from_events > gate.asked // 3  # the router passed its events: answers without a scan
    res_scan, scan, decisions_scan = _run(router_cls, attr, fed=False)
    assert scan.from_events == 0 and scan.asked == gate.asked
    assert [(r.request_id, r.worker_id) for r in res.requests] == [
        (r.request_id, r.worker_id) for r in res_scan.requests]
    assert decisions == decisions_scan
    assert sum(d[3] == "route" for d in decisions) >= 600 and len({r.worker_id for r in res.requests}) > 3
