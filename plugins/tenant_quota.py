"""Per-tenant quotas: concurrent requests and a token rate (a token bucket on prompt + output tokens).

Each tenant (``Request.tenant``: the daemon's API-key tenant or the OpenAI ``user``) has a bucket
of ``burst_tokens`` that refills at ``tokens_per_s`` in run time (``ctx.now_s``). A request costs its prompt tokens plus the output
tokens it asks for (``max_output_tokens``: what it may use, known at admission); it is
admitted only if the bucket holds its cost, which is then taken; an admission policy after this one
that refuses the request (the core's ``reject`` decision of ``cp_admit_request``) gives it back, so
a refused request costs nothing. ``max_in_flight`` caps a
tenant's requests in the system (admitted and not yet finished); ``max_in_flight: 0`` suspends a tenant: every
request of it is refused, ``ReasonCode.INVALID`` (HTTP 400, no Retry-After). Refusals are
``ReasonCode.RATE_LIMITED`` (HTTP 429 with Retry-After) and say when the bucket will hold
enough again; a request that costs more than the whole bucket can never be admitted and is
refused as ``ReasonCode.TOO_LONG`` (HTTP 400, no Retry-After). ``tenants`` overrides the limits per tenant; ``default`` applies to the others.

Requests without a tenant (none given, or an empty one) all share **one** quota: one bucket and one in-flight
count, under the ``default`` limits (or ``tenants: {"": ...}``); their refusals say "requests without a tenant".
A refusal's bucket level is rounded down to a tenth of a token, so it never reads as the cost it falls short of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission
from controlplane.events import RequestFinished
from controlplane.types import Decision, ReasonCode


class TenantLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens_per_s: float | None = Field(None, gt=0)  # refill rate; None: no token-rate limit
    burst_tokens: int | None = Field(None, ge=1)  # bucket size; None: one minute of tokens_per_s
    max_in_flight: int | None = Field(None, ge=0)  # requests admitted and not finished

    @model_validator(mode="after")
    def _burst_needs_rate(self):
        if self.burst_tokens is not None and self.tokens_per_s is None:
            raise ValueError("burst_tokens needs tokens_per_s (the bucket's refill rate)")
        return self

    @property
    def bucket_size(self) -> float | None:
        if self.tokens_per_s is None:
            return None
        return float(self.burst_tokens) if self.burst_tokens is not None else 60.0 * self.tokens_per_s


class TokenBucket:
    """Tokens available at a time; refills linearly up to its size."""

    __slots__ = ("size", "rate", "tokens", "at_s")

    def __init__(self, size: float, rate: float, now_s: float) -> None:
        self.size, self.rate, self.tokens, self.at_s = size, rate, size, now_s

    def level(self, now_s: float) -> float:
        if now_s > self.at_s:
            self.tokens = min(self.size, self.tokens + (now_s - self.at_s) * self.rate)
            self.at_s = now_s
        return self.tokens

    def seconds_until(self, cost: float, now_s: float) -> float:
        return max(0.0, (cost - self.level(now_s)) / self.rate)


def _who(tenant: str) -> tuple[str, str, str, str]:
    """How a refusal names ``tenant``: (the subject, its "has", its "needs", its "its")."""
    if tenant:
        return f"tenant {tenant!r}", "has", "needs", "its"
    return "requests without a tenant (one shared quota)", "have", "need", "their"


def _suspended(tenant: str) -> str:
    return (f"suspended: {_who(tenant)[0]} may have no requests in flight (max_in_flight 0); "
            "the operator must raise its quota")


class TenantQuota(Plugin):
    """Per-tenant concurrency quota and token-rate limit (token bucket)."""

    name = "tenant-quota"
    observes = (RequestFinished, Decision)

    class Settings(PluginSettings):
        default: TenantLimits = TenantLimits()
        tenants: dict[str, TenantLimits] = Field(default_factory=dict)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, set[str]] = {}
        self._tenant_of: dict[str, str] = {}  # admitted request id -> tenant
        self._charged: dict[str, tuple[TokenBucket, float]] = {}  # request id -> (its bucket, its cost) until it ends

    def limits(self, tenant: str) -> TenantLimits:
        return self.settings.tenants.get(tenant, self.settings.default)

    def bucket(self, tenant: str, now_s: float) -> TokenBucket | None:
        lim = self.limits(tenant)
        size = lim.bucket_size
        if size is None:
            return None
        b = self._buckets.get(tenant)
        if b is None:
            b = self._buckets[tenant] = TokenBucket(size, lim.tokens_per_s, now_s)
        return b

    def refuses_choices(self, tenant: str | None, costs: Sequence[int]) -> Admission | None:
        """The refusal of a request of several choices that must all be admitted together (the daemon's ``n``
        completions of each prompt), each costing ``costs[i]`` tokens, when no wait would ever admit them all:
        a suspended tenant, more choices than ``max_in_flight``, or more tokens together than ``burst_tokens``
        (code ``invalid``: HTTP 400, no Retry-After). None when they may be admitted some day. The hook sees
        one choice at a time, and would refuse the last ones ``rate_limited`` for ever."""
        tenant = tenant or ""
        lim = self.limits(tenant)
        who = _who(tenant)[0]
        if lim.max_in_flight == 0:
            return Admission(False, _suspended(tenant), code=ReasonCode.INVALID)
        if lim.max_in_flight is not None and len(costs) > lim.max_in_flight:
            return Admission(False, f"too many choices for the tenant's quota: the request asks for {len(costs)} "
                                    f"completions at once (prompts x n), and {who} may have at most "
                                    f"{lim.max_in_flight} requests in flight (max_in_flight); ask for fewer",
                             code=ReasonCode.INVALID)
        size = lim.bucket_size
        if size is not None and sum(costs) > size:
            return Admission(False, f"too many tokens for the tenant's quota: the request's {len(costs)} completions need "
                                    f"{sum(costs)} tokens together (prompt + max_tokens each), and {who} may use at "
                                    f"most {size:.0f} at once (burst_tokens); ask for fewer completions or max_tokens",
                             code=ReasonCode.INVALID)
        return None

    @hookimpl
    def cp_admit_request(self, ctx, request):
        tenant = request.tenant or ""
        lim = self.limits(tenant)
        if lim.max_in_flight == 0:  # a suspended tenant: no request of it is admitted, however small
            return Admission(False, _suspended(tenant), code=ReasonCode.INVALID)
        now = ctx.now_s
        b = self.bucket(tenant, now)
        cost = request.prompt_tokens + request.max_output_tokens
        who, has, needs, its = _who(tenant)
        if b is not None and cost > b.size:  # no wait helps: the same request is refused for ever
            return Admission(False, f"too long for the tenant's quota: the request needs {cost} tokens (prompt "
                                    f"{request.prompt_tokens} + max_tokens {request.max_output_tokens}), and "
                                    f"{who} may use at most {b.size:.0f} at once (burst_tokens); "
                                    "ask for fewer max_tokens or send a shorter prompt", code=ReasonCode.TOO_LONG)
        flying = self._in_flight.get(tenant)
        if lim.max_in_flight is not None and flying is not None and len(flying) >= lim.max_in_flight:
            return Admission(False, f"rate limited: {who} {has} {len(flying)} requests in flight "
                                    f"(quota {lim.max_in_flight})", code=ReasonCode.RATE_LIMITED)
        if b is not None:
            level = b.level(now)
            if level < cost:
                wait = b.seconds_until(cost, now)
                held = math.floor(level * 10) / 10  # (rounded down: 37.96 is not "holds 38" of a 38-token need)
                return Admission(False, f"rate limited: {who} {needs} {cost} tokens, {its} bucket holds "
                                        f"{held:.1f} (refills {b.rate:g}/s; enough in {wait:.3f} s)",
                                 code=ReasonCode.RATE_LIMITED, retry_after_s=wait)
            b.tokens = level - cost
            self._charged[request.request_id] = (b, cost)  # (given back if a later admission policy refuses it)
        if lim.max_in_flight is not None:
            self._in_flight.setdefault(tenant, set()).add(request.request_id)
            self._tenant_of[request.request_id] = tenant
        return None  # within its quota: the next admission policy decides

    @hookimpl
    def cp_on_event(self, ctx, event):
        kind = type(event)
        if kind is Decision:
            if (event.action == "reject" and event.hook == "cp_admit_request" and event.plugin != self.name
                    and self._charged):
                charged = self._charged.pop(event.subject, None)
                if charged is not None:  # refused after this policy let it through: the tokens go back
                    b, cost = charged
                    b.tokens = min(b.size, b.level(event.time_s) + cost)
        elif kind is RequestFinished:
            rid = event.request.request_id
            if self._charged:
                self._charged.pop(rid, None)
            if self._tenant_of:
                tenant = self._tenant_of.pop(rid, None)
                if tenant is not None:
                    self._in_flight[tenant].discard(rid)
