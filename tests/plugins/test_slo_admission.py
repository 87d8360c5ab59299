"""`slo-admission` under a batcher that serves by priority: a request waits only for the work at its priority or
above (and the running work), so a burst of a lower class does not demote or refuse the highest one; a demotion is
a recorded decision with its reason and the priority asked."""

from __future__ import annotations

import statistics
from collections import deque

from controlplane.events import RequestFinished
from controlplane.testing import make_context, make_worker, replay_with
from controlplane.types import ReasonCode, Request, RequestStatus
from plugins.slo_admission import SloAdmission
from sim.traces.record import TraceRequest


def _req(rid, prio=0, prompt=100):
    return Request(rid, 0.0, prompt, 50, model="default", priority=prio)


def _plugin() -> SloAdmission:
    plugin = SloAdmission(SloAdmission.Settings(ttft_s=1.0, min_samples=1))
    done = _req("d", prompt=1000)
    done.status, done.scheduled_s, done.first_token_s, done.finish_s = RequestStatus.COMPLETED, 9.0, 9.5, 9.9
    plugin.cp_on_event(ctx=make_context(now_s=10.0), event=RequestFinished(9.9, done))  # 2000 prompt tokens/s
    return plugin


def test_under_a_priority_batcher_only_the_work_it_does_not_overtake_is_ahead():
    plugin = _plugin()
    w = make_worker("a", waiting=deque([_req("bulk1", -1, 3000), _req("bulk2", -1, 3000), _req("vip0", 5, 1000)]))
    ctx = make_context(now_s=10.0, workers=[w])
    assert plugin.predict_ttft_s(ctx, _req("vip", 5, 500)) == 3.75  # first come, first served: all 7,000 ahead
    ctx.serves_by_priority = True
    assert plugin.predict_ttft_s(ctx, _req("vip", 5, 500)) == 0.75  # only the other priority-5 request
    assert plugin.predict_ttft_s(ctx, _req("bulk", -1, 500)) == 3.75  # behind everything queued
    assert plugin.cp_admit_request(ctx=ctx, request=_req("vip", 5, 500)) is None
    refused = plugin.cp_admit_request(ctx=ctx, request=_req("bulk", -1, 500))
    assert not refused.admit and refused.code is ReasonCode.ADMISSION_DENIED


def _trace():
    """A steady priority-5 tenant (one request every 2 s) and, from 40 s, a 240-request burst of priority -1."""
    vip = [TraceRequest(f"vip-{i}", 2.0 * i, 1500, 100, tenant="acme", priority=5) for i in range(50)]
    bulk = [TraceRequest(f"bulk-{i}", 40.0 + 0.025 * i, 1500, 100, tenant="gamma", priority=-1) for i in range(240)]
    return sorted(vip + bulk, key=lambda t: t.arrival_s)


def _replay(on_miss):
    enabled = ["slo-admission", "queue-limit", "least-loaded", "priority-continuous-batching", "fixed-replicas",
               "static-memory", "builtin-latency-models"]
    settings = {"slo-admission": {"on_miss": on_miss, "demote_to": -5, "min_samples": 5},
                "priority-continuous-batching": {"policy": "sarathi"}}
    return replay_with(trace=_trace(), plugins={"enabled": enabled, "settings": settings},
                       cluster={"models": [{"replicas": 2}]}, slo={"ttft_s": 2.0})


def test_a_lower_class_burst_does_not_demote_the_highest_class_and_demotions_are_recorded():
    res = _replay("deprioritize")
    vip = [r for r in res.requests if r.request_id.startswith("vip") and 40.0 <= r.arrival_s < 70.0]
    bulk = [r for r in res.requests if r.request_id.startswith("bulk")]
    assert sum(r.priority == 5 for r in vip) >= len(vip) - 1, [r.priority for r in vip]
    assert statistics.median(r.first_token_s - r.arrival_s for r in vip) < 2.0
    demotions = [d for d in res.decisions if d.action == "prioritize"]
    demoted = {d.subject for d in demotions}
    assert sum(r.priority == -5 for r in bulk) > 50 and {r.request_id for r in bulk if r.priority == -5} <= demoted
    for d in demotions:
        assert d.plugin == "slo-admission" and d.hook == "cp_admit_request"
        assert d.reason.startswith("SLO: predicted TTFT") and f"demoted from priority {d.payload['from']} to -5" \
            in d.reason and d.payload["to"] == -5


def test_a_lower_class_burst_does_not_refuse_the_highest_class():
    res = _replay("reject")
    refused = [r for r in res.requests if r.reason_code is ReasonCode.ADMISSION_DENIED]
    assert len(refused) > 50 and all(r.priority == -1 for r in refused)
