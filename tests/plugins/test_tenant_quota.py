"""`tenant-quota`'s refusals read true: the bucket level beside the cost, and requests without a tenant named so."""

from __future__ import annotations

from controlplane.testing import make_context
from controlplane.types import ReasonCode, Request
from plugins.tenant_quota import TenantQuota


def _req(rid, tenant=None, prompt=30, out=8):
    return Request(rid, 0.0, prompt, out, model="default", tenant=tenant)


def test_a_bucket_short_of_the_cost_by_a_fraction_does_not_read_as_holding_it():
    """37.96 tokens held of 38 needed read "needs 38 tokens, its bucket holds 38" (rounded to a whole token)."""
    plugin = TenantQuota(TenantQuota.Settings(tenants={"t": {"tokens_per_s": 10, "burst_tokens": 76}}))
    assert plugin.cp_admit_request(ctx=make_context(now_s=0.0), request=_req("1", "t")) is None  # 76 - 38 = 38 left
    assert plugin.cp_admit_request(ctx=make_context(now_s=0.0), request=_req("2", "t")) is None  # 0 left
    a = plugin.cp_admit_request(ctx=make_context(now_s=3.796), request=_req("3", "t"))  # 37.96 held
    assert not a.admit and a.code is ReasonCode.RATE_LIMITED
    assert "tenant 't' needs 38 tokens, its bucket holds 37.9 " in a.reason, a.reason


def test_requests_without_a_tenant_share_one_quota_named_as_such():
    plugin = TenantQuota(TenantQuota.Settings(default={"tokens_per_s": 1, "burst_tokens": 50, "max_in_flight": 1}))
    ctx = make_context(now_s=0.0)
    assert plugin.cp_admit_request(ctx=ctx, request=_req("1")) is None
    busy = plugin.cp_admit_request(ctx=ctx, request=_req("2", tenant=""))  # "" and None: the same quota
    assert not busy.admit and "''" not in busy.reason
    assert "requests without a tenant (one shared quota) have 1 requests in flight" in busy.reason, busy.reason
    plugin = TenantQuota(TenantQuota.Settings(default={"tokens_per_s": 1, "burst_tokens": 50}))
    assert plugin.cp_admit_request(ctx=ctx, request=_req("1")) is None
    short = plugin.cp_admit_request(ctx=ctx, request=_req("2", tenant=""))
    assert "requests without a tenant (one shared quota) need 38 tokens, their bucket holds 12.0" in short.reason
    big = plugin.cp_admit_request(ctx=ctx, request=_req("3", prompt=60))
    assert big.code is ReasonCode.TOO_LONG and "requests without a tenant (one shared quota) may use at most 50" \
        in big.reason and "''" not in big.reason


def test_a_request_a_later_admission_policy_refuses_costs_its_tenant_nothing():
    """tenant-quota before queue-limit: two 50-token prompts queue-limit refuses took 104 of team-a's 120
    tokens, and the small request after them was rate limited. The refusal gives the tokens back."""
    from controlplane.testing import replay_with
    from controlplane.types import RequestStatus
    from sim.traces.record import TraceRequest

    trace = [TraceRequest("big1", 0.0, 50, 2, tenant="team-a"), TraceRequest("big2", 0.1, 50, 2, tenant="team-a"),
             TraceRequest("small", 0.2, 1, 60, tenant="team-a")]
    res = replay_with(trace=trace, plugins={
        "enabled": ["tenant-quota", "queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                    "builtin-latency-models"],
        "settings": {"tenant-quota": {"tenants": {"team-a": {"tokens_per_s": 1, "burst_tokens": 120}}},
                     "queue-limit": {"max_prompt_tokens": 20}}}, cluster={"models": [{"replicas": 1}]})
    by_id = {r.request_id: r for r in res.requests}
    assert by_id["big1"].reason_code is ReasonCode.TOO_LONG and by_id["big2"].reason_code is ReasonCode.TOO_LONG
    assert by_id["small"].status is RequestStatus.COMPLETED, by_id["small"].reason


def test_an_admitted_request_keeps_its_charge_and_another_policys_refusal_of_another_request_refunds_nothing():
    from controlplane.events import RequestFinished
    from controlplane.types import Decision

    plugin = TenantQuota(TenantQuota.Settings(tenants={"t": {"tokens_per_s": 1, "burst_tokens": 100}}))
    ctx = make_context(now_s=0.0)
    assert plugin.cp_admit_request(ctx=ctx, request=_req("1", "t")) is None  # 38 taken
    assert plugin.cp_admit_request(ctx=ctx, request=_req("2", "t")) is None  # 38 taken
    b = plugin.bucket("t", 0.0)
    plugin.cp_on_event(ctx=ctx, event=Decision(0.0, "cp_admit_request", "queue-limit", "reject", "2", "full"))
    assert b.level(0.0) == 62  # "2" refused after: its 38 back
    plugin.cp_on_event(ctx=ctx, event=Decision(0.0, "cp_admit_request", "queue-limit", "reject", "2", "again"))
    plugin.cp_on_event(ctx=ctx, event=Decision(0.0, "cp_route_request", "core", "reject", "1", "x"))
    done = _req("1", "t")
    plugin.cp_on_event(ctx=ctx, event=RequestFinished(0.0, done))  # admitted and served: its 38 stay spent
    plugin.cp_on_event(ctx=ctx, event=Decision(0.0, "cp_admit_request", "queue-limit", "reject", "1", "late"))
    assert b.level(0.0) == 62


def test_max_in_flight_zero_suspends_a_tenant_from_its_first_request_on_and_after_a_reload():
    """``max_in_flight: 0`` admitted the tenant's first request (no in-flight set yet), then refused the rest;
    it refuses every request, a 400 ``invalid`` without Retry-After, whatever the bucket holds."""
    from types import SimpleNamespace

    from controlplane.live.driver_admin import swap_plugins
    from controlplane.live.http_errors import http_status_for
    from controlplane.plugin_manager import build_plugin_set
    from controlplane.testing import make_config

    plugin = TenantQuota(TenantQuota.Settings(tenants={"off": {"max_in_flight": 0, "tokens_per_s": 100}}))
    ctx = make_context(now_s=0.0)
    for rid in ("1", "2"):
        a = plugin.cp_admit_request(ctx=ctx, request=_req(rid, "off"))
        assert not a.admit and a.code is ReasonCode.INVALID and a.retry_after_s is None
        assert "suspended: tenant 'off' may have no requests in flight (max_in_flight 0)" in a.reason, a.reason
        assert http_status_for("rejected", a.code) == 400
    assert plugin.cp_admit_request(ctx=ctx, request=_req("3", "on")) is None  # the others: no limit

    def cfg(limit):
        return make_config(plugins={"enabled": ["tenant-quota"],
                                    "settings": {"tenant-quota": {"tenants": {"t": {"max_in_flight": limit}}}}})

    plugins = build_plugin_set(cfg(2).plugins.enabled, cfg(2).plugins.settings)
    core = SimpleNamespace(ctx=ctx, bind_plugins=lambda plugins, fallbacks: None)
    session = SimpleNamespace(plugins=plugins, clock=ctx._clock)
    assert plugins.hook.cp_admit_request(ctx=ctx, request=_req("a", "t")) is None
    swap_plugins(session, core, cfg(2), cfg(0), [], 1.0)  # the operator suspends t live
    refused = session.plugins.hook.cp_admit_request(ctx=ctx, request=_req("b", "t"))
    assert refused is not None and not refused.admit and refused.code is ReasonCode.INVALID


def test_choices_are_refused_as_a_whole_only_when_no_wait_admits_them_together():
    plugin = TenantQuota(TenantQuota.Settings(tenants={"t": {"max_in_flight": 2, "tokens_per_s": 1,
                                                             "burst_tokens": 100}}))
    assert plugin.refuses_choices("t", [40, 40]) is None
    many = plugin.refuses_choices("t", [10, 10, 10])
    assert many.code is ReasonCode.INVALID and "3 completions at once" in many.reason and "at most 2" in many.reason
    heavy = plugin.refuses_choices("t", [60, 60])
    assert heavy.code is ReasonCode.INVALID and "need 120 tokens together" in heavy.reason
    assert plugin.refuses_choices("other", [10] * 50) is None  # no limits: any number
    off = TenantQuota(TenantQuota.Settings(default={"max_in_flight": 0}))
    assert "suspended" in off.refuses_choices(None, [1, 1]).reason
