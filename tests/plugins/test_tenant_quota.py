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
