"""Admission and queueing: priority classes, tenant quotas (token bucket), fair share, SLO-aware admission."""

from __future__ import annotations

from collections import Counter, deque

import pytest
from pydantic import ValidationError

from controlplane import hookimpl
from controlplane.events import RequestArrived, RequestFinished
from controlplane.testing import make_context, make_worker, replay_with
from controlplane.types import ReasonCode, Request, RequestStatus
from plugins.fair_share import FairShare
from plugins.priority_classes import PriorityClasses
from plugins.slo_admission import SloAdmission
from plugins.tenant_quota import TenantQuota
from sim.traces.record import TraceRequest

from .kept_queues import overloaded_trace, replay_kept_and_walked


def _req(rid, arrival=0.0, prio=0, tenant=None, prompt=100, out=50):
    return Request(rid, arrival, prompt, out, model="default", priority=prio, tenant=tenant)


CLASSES = {"classes": [{"name": "gold", "min_priority": 5, "max_queued": 1, "queue_timeout_s": 0.5},
                       {"name": "std", "min_priority": 0, "max_queued": 3}]}


def test_priority_class_caps_count_only_their_class():
    plugin = PriorityClasses(PriorityClasses.Settings(**CLASSES))
    w = make_worker(waiting=deque([_req("g", prio=7), _req("s1"), _req("s2")]))
    ctx = make_context(workers=[w])
    a = plugin.cp_admit_request(ctx=ctx, request=_req("g2", prio=5))
    assert not a.admit and a.code is ReasonCode.QUEUE_FULL and "'gold'" in a.reason
    assert plugin.cp_admit_request(ctx=ctx, request=_req("s3")) is None  # std: 2 of 3
    assert plugin.cp_admit_request(ctx=ctx, request=_req("below", prio=-3)) is None  # no class: no cap


def test_queue_timeout_expires_only_past_the_class_timeout():
    plugin = PriorityClasses(PriorityClasses.Settings(**CLASSES))
    w = make_worker(waiting=deque([_req("g-old", arrival=0.0, prio=5), _req("g-new", arrival=0.4, prio=5),
                                   _req("s-old", arrival=0.0)]))
    plan = plugin.cp_form_batch(ctx=make_context(now_s=0.6, workers=[w]), worker=w)
    assert [r.request_id for r, _ in plan.expire] == ["g-old"]  # std has no timeout
    assert "queue timeout" in plan.expire[0][1]
    assert plugin.cp_form_batch(ctx=make_context(now_s=0.5, workers=[w]), worker=w) is None


def test_queue_timeouts_in_a_replay_are_rejected_with_their_code():
    trace = [TraceRequest(str(i), 0.0, 4000, 400, priority=5) for i in range(40)]
    settings = {"priority-classes": {"classes": [{"name": "gold", "min_priority": 0, "queue_timeout_s": 0.5}]},
                "static-batching": {}}
    res = replay_with(trace=trace, plugins={"enabled": ["priority-classes", "static-batching", "least-loaded",
                                                        "fixed-replicas", "static-memory", "builtin-latency-models"],
                                            "settings": settings},
                      cluster={"models": [{"replicas": 1}]})
    timed_out = [r for r in res.requests if r.reason_code is ReasonCode.QUEUE_TIMEOUT]
    assert timed_out and all(r.status is RequestStatus.REJECTED and r.scheduled_s is None for r in timed_out)
    assert len(res.requests) == 40 and res.summary["num_completed"] + len(timed_out) == 40


def test_class_settings_are_checked():
    with pytest.raises(ValidationError, match="duplicate class names"):
        PriorityClasses.Settings(classes=[{"name": "a"}, {"name": "a", "min_priority": 3}])


def test_token_bucket_limits_a_tenant_and_refills_with_run_time():
    plugin = TenantQuota(TenantQuota.Settings(tenants={"t": {"tokens_per_s": 100, "burst_tokens": 300}}))
    ctx = make_context(now_s=0.0)
    assert plugin.cp_admit_request(ctx=ctx, request=_req("1", tenant="t", prompt=100, out=100)) is None
    a = plugin.cp_admit_request(ctx=ctx, request=_req("2", tenant="t", prompt=100, out=100))
    assert not a.admit and a.code is ReasonCode.RATE_LIMITED and "enough in 1.000 s" in a.reason
    assert plugin.cp_admit_request(ctx=ctx, request=_req("3", tenant="other", prompt=100, out=100)) is None
    later = make_context(now_s=1.0)
    assert plugin.cp_admit_request(ctx=later, request=_req("2", tenant="t", prompt=100, out=100)) is None
    big = plugin.cp_admit_request(ctx=later, request=_req("4", tenant="t", prompt=300, out=1))
    assert not big.admit and "the request needs 301 tokens" in big.reason


def test_a_request_larger_than_the_whole_bucket_is_refused_for_good_not_rate_limited():
    """No wait makes 301 tokens fit a bucket of 300: a 400 ``too_long`` without retry-after, not a 429
    asking to retry in a second for ever; the tenant's in-flight quota being full changes nothing."""
    from controlplane.live.http_errors import http_status_for

    plugin = TenantQuota(TenantQuota.Settings(tenants={"t": {"tokens_per_s": 100, "burst_tokens": 300,
                                                             "max_in_flight": 1}}))
    ctx = make_context(now_s=0.0)
    assert plugin.cp_admit_request(ctx=ctx, request=_req("1", tenant="t", prompt=10, out=10)) is None
    big = plugin.cp_admit_request(ctx=ctx, request=_req("2", tenant="t", prompt=1, out=300))
    assert not big.admit and big.code is ReasonCode.TOO_LONG and big.retry_after_s is None
    assert http_status_for("rejected", big.code) == 400
    assert "needs 301 tokens (prompt 1 + max_tokens 300)" in big.reason
    assert "tenant 't' may use at most 300" in big.reason and "''" not in big.reason


def test_in_flight_quota_frees_a_slot_when_a_request_finishes():
    plugin = TenantQuota(TenantQuota.Settings(default={"max_in_flight": 2}))
    ctx = make_context()
    first, second = _req("1", tenant="t"), _req("2", tenant="t")
    assert plugin.cp_admit_request(ctx=ctx, request=first) is None
    assert plugin.cp_admit_request(ctx=ctx, request=second) is None
    a = plugin.cp_admit_request(ctx=ctx, request=_req("3", tenant="t"))
    assert not a.admit and "2 requests in flight (quota 2)" in a.reason
    first.status = RequestStatus.COMPLETED
    plugin.cp_on_event(ctx=ctx, event=RequestFinished(1.0, first))
    assert plugin.cp_admit_request(ctx=ctx, request=_req("3", tenant="t")) is None


def test_fair_share_serves_the_least_served_tenant_first():
    plugin = FairShare()
    ctx = make_context()
    hog = [_req(f"h{i}", arrival=0.01 * i, tenant="hog") for i in range(3)]
    for r in hog:
        plugin.cp_on_event(ctx=ctx, event=RequestArrived(0.0, r))
    w = make_worker(waiting=deque(hog), max_num_seqs=1)
    plan = plugin.cp_form_batch(ctx=ctx, worker=w)
    assert [r.request_id for r, _ in plan.prefill] == ["h0"] and plugin.counters["hog"] == 100
    w.waiting.popleft()
    late = _req("m0", arrival=5.0, tenant="mouse")
    plugin.cp_on_event(ctx=ctx, event=RequestArrived(5.0, late))
    w.waiting.append(late)
    plan = plugin.cp_form_batch(ctx=ctx, worker=w)
    # The newcomer is lifted to the smallest busy counter (100), not 0, and ties go to the older...
    assert plugin.counters["mouse"] == 100
    assert [r.request_id for r, _ in plan.prefill] == ["h1"]
    # ...but once hog got more, mouse goes before hog's older requests.
    plan = plugin.cp_form_batch(ctx=ctx, worker=w)
    assert [r.request_id for r, _ in plan.prefill] == ["m0"]


def test_slo_admission_refuses_when_the_queue_already_misses_the_target():
    plugin = SloAdmission(SloAdmission.Settings(ttft_s=1.0, min_samples=1))
    ctx = make_context(now_s=10.0)
    done = _req("d", prompt=1000)
    done.status, done.scheduled_s, done.first_token_s, done.finish_s = RequestStatus.COMPLETED, 9.0, 9.5, 9.9
    plugin.cp_on_event(ctx=ctx, event=RequestFinished(9.9, done))  # 2000 prompt tokens/s
    light = make_worker("a", waiting=deque([_req("q", prompt=1000)]))
    ctx = make_context(now_s=10.0, workers=[light])
    assert plugin.predict_ttft_s(ctx, _req("n", prompt=500)) == pytest.approx(0.75)
    assert plugin.cp_admit_request(ctx=ctx, request=_req("n", prompt=500)) is None
    light.waiting.append(_req("q2", prompt=3000))
    a = plugin.cp_admit_request(ctx=ctx, request=_req("n", prompt=500))
    assert not a.admit and a.code is ReasonCode.ADMISSION_DENIED and "predicted TTFT 2.250 s" in a.reason
    demote = SloAdmission(SloAdmission.Settings(ttft_s=1.0, min_samples=1, on_miss="deprioritize"))
    demote._rates = plugin._rates
    n = _req("n", prompt=500)
    wrapper = demote.cp_admit_request(ctx=ctx, request=n)  # (a hook wrapper: the next policies decide meanwhile)
    next(wrapper)
    assert n.priority == -1  # they decide on the demoted priority
    with pytest.raises(StopIteration) as answer:
        wrapper.send(None)  # none of them objects
    a = answer.value.value
    assert a.admit and a.priority == -1 and "demoted from priority 0 to -1" in a.reason and n.priority == 0


def test_a_demoted_request_is_still_refused_by_a_queue_limit_listed_after():
    """With slo-admission (deprioritize) listed first, its admitting answer ended the chain: a queue limit of 10
    was never asked about the requests it demoted, the overload's own."""
    trace = [TraceRequest(str(i), 0.05 * i, 3000, 100) for i in range(1200)]
    enabled = ["slo-admission", "queue-limit", "continuous-batching", "least-loaded", "fixed-replicas",
               "static-memory", "builtin-latency-models"]
    res = replay_with(trace=trace, plugins={"enabled": enabled, "settings": {
        "slo-admission": {"min_samples": 5, "on_miss": "deprioritize"}, "queue-limit": {"max_queued": 10}}},
        cluster={"models": [{"replicas": 1}]}, slo={"ttft_s": 1.0})
    full = [r for r in res.requests if r.reason_code is ReasonCode.QUEUE_FULL]
    assert full and res.summary["num_completed"] + len(full) == 1200
    assert all(r.priority == 0 for r in full)  # refused: the priority asked, not the one it would have waited at
    demoted = {d.subject for d in res.decisions if d.action == "prioritize" and d.plugin == "slo-admission"}
    assert demoted and all(r.priority == -1 for r in res.requests if r.request_id in demoted)


def test_slo_admission_in_a_replay_sheds_overload_early():
    trace = [TraceRequest(str(i), 0.05 * i, 3000, 100) for i in range(1200)]
    enabled = ["continuous-batching", "least-loaded", "fixed-replicas", "static-memory", "builtin-latency-models"]
    base = replay_with(trace=trace, plugins={"enabled": enabled}, cluster={"models": [{"replicas": 1}]}, slo={"ttft_s": 1.0})
    slo = replay_with(trace=trace, plugins={"enabled": ["slo-admission", *enabled],
                                            "settings": {"slo-admission": {"min_samples": 5}}},
                      cluster={"models": [{"replicas": 1}]}, slo={"ttft_s": 1.0})
    denied = [r for r in slo.requests if r.reason_code is ReasonCode.ADMISSION_DENIED]
    assert denied and slo.summary["ttft_p90_s"] < base.summary["ttft_p90_s"]
    assert len(slo.requests) == 1200
    assert slo.summary["slo_attainment"] > base.summary["slo_attainment"]


def test_fair_share_in_a_replay_protects_a_light_tenant_from_a_flood():
    flood = [TraceRequest(f"hog{i}", 0.001 * i, 2000, 50, tenant="hog") for i in range(300)]
    light = [TraceRequest(f"mouse{i}", 0.5 + 0.5 * i, 2000, 50, tenant="mouse") for i in range(10)]
    trace = sorted(flood + light, key=lambda t: t.arrival_s)
    rest = ["least-loaded", "fixed-replicas", "static-memory", "builtin-latency-models"]
    ttft = {}
    for batcher in ("continuous-batching", "fair-share"):
        res = replay_with(trace=trace, plugins={"enabled": [batcher, *rest]}, cluster={"models": [{"replicas": 1}]})
        assert len(res.requests) == 310
        mouse = [r.first_token_s - r.arrival_s for r in res.requests if r.tenant == "mouse"]
        ttft[batcher] = sorted(mouse)[len(mouse) // 2]
    assert ttft["fair-share"] < ttft["continuous-batching"] / 5


def _rows(res):
    return [(r.request_id, r.worker_id, r.status, r.reason_code, r.scheduled_s, r.finish_s) for r in res.requests]


def _one_tenant_then_a_burst():
    a = [TraceRequest(f"a{i}", 0.01 * i, 600, 80, tenant="a") for i in range(800)]
    b = [TraceRequest(f"b{i}", 3.0 + 0.005 * i, 600, 80, tenant="b") for i in range(100)]
    return sorted(a + b, key=lambda t: t.arrival_s)


def _four_tenants():
    """Three busy tenants and a rare one: a batch that takes the rare tenant's request goes on to the next levels."""
    return [TraceRequest(str(i), 0.008 * i, 300 + 97 * (i % 7), 40 + 13 * (i % 5),
                         tenant="d" if i % 40 == 0 else "abc"[(i * i + i // 7) % 3]) for i in range(1200)]


@pytest.mark.parametrize("make_trace", [_one_tenant_then_a_burst, _four_tenants])
def test_fair_share_serves_an_in_order_queue_as_the_sort_would(monkeypatch, make_trace):
    """A queue in arrival order is served as it stands while one tenant is in the system and read level by level
    of the counters otherwise; a queue out of order (preemptions) is sorted. Rows equal a fair share that sorts
    every queue for every batch."""
    trace = make_trace()
    enabled = ["fair-share", "least-loaded", "fixed-replicas", "static-memory", "builtin-latency-models"]
    cluster = {"models": [{"replicas": 2, "num_kv_blocks": 200, "max_num_seqs": 16}]}
    paths = Counter()
    fast = FairShare._queue

    def counting(self, w):
        q = fast(self, w)
        paths["as is" if q is w.waiting else "sorted" if isinstance(q, list) else "by level"] += len(w.waiting) > 1
        return q

    def always_sorted(self, w):
        c = self.counters
        return sorted(w.waiting, key=lambda r: (c.get(r.tenant or "", 0.0), r.arrival_s))

    monkeypatch.setattr(FairShare, "_queue", counting)
    kept = replay_with(trace=trace, plugins={"enabled": enabled}, cluster=cluster)
    monkeypatch.setattr(FairShare, "_queue", always_sorted)
    walked = replay_with(trace=trace, plugins={"enabled": enabled}, cluster=cluster)
    assert _rows(kept) == _rows(walked)
    assert kept.summary["num_preemptions"] > 0  # preempted requests re-enter out of arrival order
    assert paths["sorted"] > 0 and paths["as is" if make_trace is _one_tenant_then_a_burst else "by level"] > 100


def test_fair_share_by_level_is_the_stable_sort_by_counter():
    plugin, ctx = FairShare(), make_context()
    reqs = [_req(str(i), arrival=0.1 * (i // 2), tenant="xyzw"[i % 4]) for i in range(12)]  # ties in arrival
    for r in reqs:
        plugin.cp_on_event(ctx=ctx, event=RequestArrived(r.arrival_s, r))
    plugin.counters.update({"x": 5.0, "y": 1.0, "z": 5.0, "w": 0.0})
    w = make_worker(waiting=deque(reqs))
    got = [r.request_id for r in plugin._queue(w)]
    assert got == [r.request_id for r in sorted(reqs, key=lambda r: (plugin.counters[r.tenant], r.arrival_s))]
    assert got[:3] == ["3", "7", "11"]  # w first, then y, then x and z merged in arrival order


def test_fair_share_reads_rare_tenants_at_one_counter_from_the_tail():
    """Two tenants at one counter with three requests at the end of a long queue (served first: only their latest
    wait) are read from the tail, in queue order; then the busy tenant, from its own requests in queue order."""
    plugin = FairShare()
    busy = [_req(f"a{i}", arrival=0.01 * i, tenant="a") for i in range(40)]
    rare = [_req("b0", arrival=0.295, tenant="b"), _req("c0", arrival=0.5, tenant="c"),
            _req("b1", arrival=0.5, tenant="b")]  # (in arrival order, with a tie)
    plugin.counters.update({"a": 5.0, "b": 0.0, "c": 0.0})
    w = make_worker(waiting=deque(busy[:30] + rare[:1] + busy[30:] + rare[1:]))
    scanned = []
    w.waiting.__class__ = type("Watched", (type(w.waiting),), {"__slots__": (),  # (counts its reads from either end)
        "__iter__": lambda q: (scanned.append("head"), iter(list(deque.__iter__(q))))[1],
        "__reversed__": lambda q: (scanned.append("tail"), deque.__reversed__(q))[1]})
    order = plugin._queue(w)
    assert [next(order).request_id for _ in range(4)] == ["b0", "c0", "b1", "a0"]
    assert scanned == ["tail"]
    assert [r.request_id for r in plugin._queue(w)] == ["b0", "c0", "b1"] + [f"a{i}" for i in range(40)]


def test_queue_timeouts_stop_at_the_first_request_that_has_not_waited_the_shortest(monkeypatch):
    """Two classes with timeouts on an overloaded replica, preempting: the walk that stops early refuses exactly
    what the whole walk refuses."""
    trace = [TraceRequest(str(i), 0.004 * i, 500, 60, priority=(5 if i % 3 == 0 else 0)) for i in range(1500)]
    settings = {"priority-classes": {"classes": [
        {"name": "gold", "min_priority": 5, "queue_timeout_s": 1.5},
        {"name": "std", "min_priority": 0, "queue_timeout_s": 4.0}]}}
    enabled = ["priority-classes", "priority-continuous-batching", "least-loaded", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    cluster = {"models": [{"replicas": 2, "num_kv_blocks": 150, "max_num_seqs": 16}]}
    kept = replay_with(trace=trace, plugins={"enabled": enabled, "settings": settings}, cluster=cluster)
    init = PriorityClasses.__init__

    def walking(self, settings=None):
        init(self, settings)
        self._min_timeout = None  # walk every queue whole

    monkeypatch.setattr(PriorityClasses, "__init__", walking)
    walked = replay_with(trace=trace, plugins={"enabled": enabled, "settings": settings}, cluster=cluster)
    assert _rows(kept) == _rows(walked)
    codes = Counter(r.reason_code for r in kept.requests)
    assert codes[ReasonCode.QUEUE_TIMEOUT] > 100 and len(kept.requests) == 1500


# --- queue sums read from the queue (controlplane.waiting_queue), not walked at each arrival -------------------

class _Checked:
    """At each admission, every replica's kept queue total (``kept(queue)``) against a walk (``walked(queue)``)."""

    def _check(self, ctx, request):
        for w in ctx.workers.values():
            kept, walked = self.kept(w.waiting), self.walked(w.waiting)
            if kept != walked:
                self.differ.append((request.request_id, w.worker_id, kept, walked))
            self.checked += 1
            self.longest = max(self.longest, len(w.waiting))


class _PrefillCheckedSloAdmission(_Checked, SloAdmission):
    name = "prefill-checked-slo-admission"

    def __init__(self) -> None:
        super().__init__(SloAdmission.Settings(min_samples=5, on_miss="deprioritize", demote_to=-1))
        self.differ, self.checked, self.longest = [], 0, 0

    @staticmethod
    def kept(q):
        return q.remaining_prefill_tokens, q.prefill_by_priority

    @staticmethod
    def walked(q):
        by_priority: dict = {}
        for r in q:
            by_priority[r.priority] = by_priority.get(r.priority, 0) + r.remaining_prefill_tokens
        return sum(r.prompt_tokens + r.recompute_tokens - r.num_computed_tokens for r in q), by_priority

    def predict_ttft_s(self, ctx, request):
        self._check(ctx, request)
        return super().predict_ttft_s(ctx, request)


def test_slo_admission_reads_the_kept_queued_prefill_and_decides_as_the_walk_does(monkeypatch):
    from plugins import slo_admission

    enabled = ["prefix-cache", "least-loaded", "priority-continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    kept, _, _ = replay_kept_and_walked(monkeypatch, slo_admission, _PrefillCheckedSloAdmission, overloaded_trace(),
                                        enabled, slo={"ttft_s": 1.0})
    assert sum(r.cached_tokens > 0 for r in kept.requests) > 500
    demoted = sum(r.priority == -1 for r in kept.requests)  # (an admission that admits is not a decision)
    assert 100 < demoted < len(kept.requests)


class _CountCheckedPriorityClasses(_Checked, PriorityClasses):
    name = "count-checked-priority-classes"

    def __init__(self) -> None:
        super().__init__(PriorityClasses.Settings(classes=[
            {"name": "gold", "min_priority": 5, "max_queued": 60}, {"name": "std", "min_priority": 0}]))
        self.differ, self.checked, self.longest = [], 0, 0

    @staticmethod
    def kept(q):
        return q.priorities

    @staticmethod
    def walked(q):
        return dict(Counter(r.priority for r in q))

    @hookimpl
    def cp_admit_request(self, ctx, request):
        self._check(ctx, request)
        return super().cp_admit_request(ctx=ctx, request=request)


def test_priority_class_caps_read_the_kept_priority_counts_and_refuse_as_the_walk_does(monkeypatch):
    from plugins import priority_classes

    enabled = ["prefix-cache", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    kept, _, _ = replay_kept_and_walked(monkeypatch, priority_classes, _CountCheckedPriorityClasses,
                                        overloaded_trace(priorities=7), enabled)
    assert sum(r.cached_tokens > 0 for r in kept.requests) > 500
    full = [r for r in kept.requests if r.reason_code is ReasonCode.QUEUE_FULL]
    assert len(full) > 50 and all(r.priority >= 5 for r in full)
