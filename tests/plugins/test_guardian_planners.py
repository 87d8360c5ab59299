"""Guardian planners: cached verdicts, back-off under saturation, risk-based sampling, cascades."""

from __future__ import annotations

from controlplane.testing import make_context, make_requests, make_trace, replay_with
from controlplane.types import Decision, RequestStatus
from plugins.guardian_cascade import CascadeGuardian
from plugins.guardian_risk import RiskSampledGuardian
from sim.traces.record import TraceRequest
from tests.fixtures.common import reachable_redis_url

PROMPT = "Say hello to the cluster."


def _repeats(times, prompt=PROMPT):
    return [TraceRequest(f"r{i}", t, 12, 8, prompt=prompt) for i, t in enumerate(times)]


def _guard(**settings):
    # exact-cache off: every repeat is generated and checked again (the verdict cache is what is tested)
    return {"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                        "sampled-guardian", "builtin-latency-models"],
            "settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", **settings}}}


def test_the_same_text_gets_the_cached_verdict_within_the_ttl():
    res = replay_with(trace=_repeats([0.0, 5.0, 10.0, 200.0]), plugins=_guard(verdict_ttl_s=60.0),
                      sim={"guardian_block_rate": 1.0})
    cached = {d.subject for d in res.decisions if d.action == "guardian_cached"}
    checked = {d.subject for d in res.decisions if d.action == "guardian_check"}
    assert cached == {"r1", "r2"}  # within 60 s of r0's verdict
    assert checked == {"r0", "r3"}  # r3 comes after the TTL: checked again
    assert {r.status for r in res.requests} == {RequestStatus.BLOCKED}  # the cached block blocks too
    rows = {r.request_id: r for r in res.requests}
    # a reproducible answer known to be blocked is not generated again: blocked on arrival, as an answer
    for rid in ("r1", "r2"):
        r = rows[rid]
        assert r.worker_id is None and r.output_tokens == 0 and r.reason_code is None and r.finish_s == r.arrival_s
    assert rows["r3"].output_tokens == 8  # after the TTL: generated and checked again


def test_a_passed_answer_is_generated_again_and_its_cached_pass_costs_no_check():
    res = replay_with(trace=_repeats([0.0, 5.0]), plugins=_guard(verdict_ttl_s=60.0))
    rows = {r.request_id: r for r in res.requests}
    assert rows["r1"].output_tokens == 8 and rows["r1"].guardian_verdict == "pass"
    assert [d.subject for d in res.decisions if d.action == "guardian_cached"] == ["r1"]
    assert [d.subject for d in res.decisions if d.action == "guardian_check"] == ["r0"]


def test_without_a_ttl_nothing_is_cached():
    res = replay_with(trace=_repeats([0.0, 5.0]), plugins=_guard())
    assert not [d for d in res.decisions if d.action == "guardian_cached"]


def test_cached_prompt_verdicts_block_before_generation():
    res = replay_with(trace=_repeats([0.0, 5.0]), plugins=_guard(verdict_ttl_s=60.0, stages=["input"]),
                      sim={"guardian_block_rate": 1.0})
    assert [d.subject for d in res.decisions if d.action == "guardian_cached"] == ["r1"]
    assert all(r.worker_id is None and r.status is RequestStatus.BLOCKED for r in res.requests)


def test_sampling_backs_off_when_the_guardian_is_saturated_and_says_so():
    slow = {"name": "slow", "replicas": 1, "latency": {"base_s": 2.0, "max_batch": 1}, "timeout_s": 60}
    trace = [TraceRequest(str(i), i * 0.1, 16, 1) for i in range(10)]
    res = replay_with(trace=trace, plugins=_guard(guardian="slow", max_inflight_per_replica=2),
                      guardians={"models": [slow]})
    backoffs = [d for d in res.decisions if d.action == "guardian_backoff"]
    checks = [d for d in res.decisions if d.action == "guardian_check"]
    assert backoffs and checks and len(backoffs) + len(checks) == 10
    assert all(d.payload["guardian"] == "slow" and d.payload["inflight"] >= 2 for d in backoffs)
    unbounded = replay_with(trace=trace, plugins=_guard(guardian="slow"), guardians={"models": [slow]})
    assert not [d for d in unbounded.decisions if d.action == "guardian_backoff"]


def _verdict(rid, verdict):
    return Decision(0.0, "cp_guardian_plan", "judge", "guardian_verdict", rid, None,
                    {"guardian": "judge", "verdict": verdict, "stage": "output"})


def test_risk_sampling_learns_which_tenants_are_risky_from_verdicts_only():
    g = RiskSampledGuardian(RiskSampledGuardian.Settings(rate=0.2, min_rate=0.01))
    ctx = make_context(seed=3)
    reqs = make_requests(4000)
    for i, r in enumerate(reqs):
        r.tenant = "bad" if i % 10 == 0 else f"good{i % 7}"
    sampled = {"bad": 0, "good": 0}
    seen = {"bad": 0, "good": 0}
    for r in reqs:
        plan = g.cp_guardian_plan(ctx=ctx, request=r, stage="output")
        kind = "bad" if r.tenant == "bad" else "good"
        seen[kind] += 1
        if plan.check:
            sampled[kind] += 1
            g.cp_on_event(ctx=ctx, event=_verdict(r.request_id, "block" if kind == "bad" else "pass"))
    bad, good = sampled["bad"] / seen["bad"], sampled["good"] / seen["good"]
    assert bad > 0.8 and good < 0.15  # the risky tenant is checked far more often
    total = (sampled["bad"] + sampled["good"]) / len(reqs)
    assert 0.1 < total < 0.35  # near the budget


def test_risky_terms_raise_a_prompts_chance():
    g = RiskSampledGuardian(RiskSampledGuardian.Settings(rate=0.1, risky_terms=("exploit",), term_boost=8))
    ctx = make_context(seed=1)
    reqs = make_requests(2000)
    for i, r in enumerate(reqs):
        r.prompt = "write an exploit" if i % 5 == 0 else "write a poem"
    plans = [(r.prompt, g.cp_guardian_plan(ctx=ctx, request=r, stage="output").check) for r in reqs]
    risky = [c for p, c in plans if "exploit" in p]
    plain = [c for p, c in plans if "exploit" not in p]
    assert sum(risky) / len(risky) > 3 * sum(plain) / len(plain)


def test_risk_sampling_draws_from_the_runs_rng():
    def run():
        g = RiskSampledGuardian(RiskSampledGuardian.Settings(rate=0.3))
        ctx = make_context(seed=9)
        return [g.cp_guardian_plan(ctx=ctx, request=r, stage="output").check for r in make_requests(200)]
    assert run() == run()


def test_a_cascade_plan_screens_then_escalates():
    g = CascadeGuardian(CascadeGuardian.Settings(screen=("a", "b"), judge=("j",), escalate_above=0.3))
    plan = g.cp_guardian_plan(ctx=make_context(), request=make_requests(1)[0], stage="output")
    assert plan.check and plan.names == ("a", "b") and plan.then.names == ("j",) and plan.then_above == 0.3
    assert g.cp_guardian_plan(ctx=make_context(), request=make_requests(1)[0], stage="input") is None


def test_risk_planner_in_a_replay_checks_within_budget():
    trace = make_trace(300, qps=10)
    res = replay_with(trace=trace, plugins={
        "enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                    "risk-guardian", "builtin-latency-models"],
        "settings": {"risk-guardian": {"rate": 0.25}}}, sim={"guardian_block_rate": 0.1})
    checked = sum(d.action == "guardian_check" for d in res.decisions)
    assert 0.1 * 300 < checked < 0.45 * 300


def test_verdicts_are_shared_between_planners_through_redis():
    import uuid

    import redis

    from plugins.guardians import SampledGuardian

    url = reachable_redis_url()
    ns = f"test-{uuid.uuid4().hex[:8]}"
    settings = SampledGuardian.Settings(rate=1.0, guardian="judge", verdict_ttl_s=60.0, stages=("input",),
                                        store={"backend": "redis", "redis_url": url, "namespace": ns})
    a, b = SampledGuardian(settings), SampledGuardian(settings)  # two daemons
    ctx = make_context()
    r1, r2 = make_requests(2)
    r1.prompt = r2.prompt = "the same prompt"
    try:
        plan = a.cp_guardian_plan(ctx=ctx, request=r1, stage="input")
        assert plan.check and plan.cached is None
        a.cp_on_event(ctx=ctx, event=Decision(0.0, "cp_guardian_plan", "judge", "guardian_verdict", r1.request_id,
                                              "unsafe", {"guardian": "judge", "verdict": "block", "stage": "input"}))
        shared = b.cp_guardian_plan(ctx=ctx, request=r2, stage="input")
        assert shared.cached["verdict"] == "block" and shared.cached["reason"] == "unsafe"
    finally:
        client = redis.Redis.from_url(url)
        for k in client.scan_iter(f"{ns}:*"):
            client.delete(k)


def test_a_misspelt_or_empty_stage_is_refused_naming_the_key():
    # a stage the core never asks ("outputs", "prompt") used to be accepted and checked nothing
    import pytest

    from controlplane.errors import ConfigError
    from controlplane.plugin_manager import build_plugin_set

    for planner in ("sampled-guardian", "risk-guardian", "cascade-guardian"):
        with pytest.raises(ConfigError, match=rf"plugins\.settings\.{planner}\.stages\.0: Input should be 'input' or 'output'") as bad:
            build_plugin_set(["queue-limit", planner], {planner: {"stages": ["outputs"]}})
        # one error for one misspelt stage (it also said "at least 1 item after validation, not 0")
        assert "at least" not in str(bad.value), str(bad.value)
        with pytest.raises(ConfigError, match=rf"plugins\.settings\.{planner}\.stages: .*at least one stage"):
            build_plugin_set(["queue-limit", planner], {planner: {"stages": []}})


def test_a_cascade_without_a_screen_or_judge_is_refused_naming_the_key():
    # used to load, then raise IndexError as a plugin error on every request
    import pytest

    from controlplane.errors import ConfigError
    from controlplane.plugin_manager import build_plugin_set

    for tier in ("screen", "judge"):
        with pytest.raises(ConfigError, match=rf"plugins\.settings\.cascade-guardian\.{tier}: .*at least 1 item"):
            build_plugin_set(["queue-limit", "cascade-guardian"], {"cascade-guardian": {tier: []}})


def test_a_guardian_name_the_config_does_not_declare_is_warned_of_at_start(caplog):
    # guardian: judeg beside a declared judge used to run silently as an undeclared guardian
    # (simulator: no capacity, no GPU cost, the label as verdict; live: "unavailable", failing open)
    import logging

    declared = {"models": [{"name": "judge"}, {"name": "screen"}]}
    with caplog.at_level(logging.WARNING, logger="plugins.guardian_planner"):
        res = replay_with(trace=_repeats([0.0]), plugins=_guard(guardian="judeg"), guardians=declared)
    assert res.summary["num_completed"] == 1
    warned = [r.getMessage() for r in caplog.records if r.name == "plugins.guardian_planner"]
    assert warned == ["plugins.settings.sampled-guardian names guardian(s) 'judeg' that guardians.models does not "
                      "declare (declared: judge, screen); their checks answer 'unavailable', which fails open "
                      "(see docs/guardians.md)"]
    caplog.clear()
    cascade = {"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                           "cascade-guardian", "sampled-guardian", "builtin-latency-models"],
               "settings": {"cascade-guardian": {"judge": ["judge", "jugde"]}}}
    with caplog.at_level(logging.WARNING, logger="plugins.guardian_planner"):
        replay_with(trace=_repeats([0.0]), plugins=cascade, guardians=declared)  # sampled-guardian: rate 0, names none
        replay_with(trace=_repeats([0.0]), plugins=_guard(guardian="judge"), guardians=declared)
        replay_with(trace=_repeats([0.0]), plugins=_guard(guardian="anything"))  # none declared: the old behaviour
    assert [r.getMessage().split(" names ")[1].split(" that")[0] for r in caplog.records
            if r.name == "plugins.guardian_planner"] == ["guardian(s) 'jugde'"]


def test_a_replay_with_a_redis_verdict_store_checks_as_much_as_the_one_before():
    # The second replay of a text trace used to take every verdict from the first: 0 checks.
    import uuid

    import redis

    url = reachable_redis_url()
    ns = f"test-{uuid.uuid4().hex[:8]}"
    store = {"backend": "redis", "redis_url": url, "namespace": ns}
    checks = []
    try:
        for _ in range(2):
            res = replay_with(trace=_repeats([0.0, 5.0, 10.0]), plugins=_guard(verdict_ttl_s=60.0, store=store))
            checks.append(sum(d.action == "guardian_check" for d in res.decisions))
        assert checks == [1, 1]  # one check, then two cached verdicts, in each run
        assert not list(redis.Redis.from_url(url).scan_iter(f"{ns}:*"))
    finally:
        client = redis.Redis.from_url(url)
        for k in client.scan_iter(f"{ns}:*"):
            client.delete(k)


def test_a_risk_floor_above_the_budget_is_refused():
    # min_rate 0.5 with rate 0.2 used to check at least half the requests, silently over budget
    import pytest

    from controlplane.errors import ConfigError
    from controlplane.plugin_manager import build_plugin_set

    with pytest.raises(ConfigError, match=r"plugins\.settings\.risk-guardian: .*min_rate 0\.5 is above the budget rate 0\.2"):
        build_plugin_set(["queue-limit", "risk-guardian"], {"risk-guardian": {"rate": 0.2, "min_rate": 0.5}})


def test_a_request_that_ends_without_its_verdicts_leaves_nothing_behind():
    # Checks in flight remember the verdict's cache key until the last word; a request cancelled, failed
    # or refused meanwhile drops its checks, so no word comes: its entry goes when it finishes.
    from controlplane.events import RequestFinished
    from controlplane.types import Request
    from plugins.guardians import SampledGuardian

    planner = SampledGuardian(SampledGuardian.Settings(rate=1.0, guardians=("a", "b"), stages=("input",),
                                                       verdict_ttl_s=60.0))
    ctx = make_context()
    ended = {}
    for status in (RequestStatus.CANCELLED, RequestStatus.FAILED, RequestStatus.REJECTED, RequestStatus.COMPLETED):
        r = Request(f"r-{status.value}", 0.0, 12, 8, prompt=f"prompt {status.value}")
        plan = planner.cp_guardian_plan(ctx, r, "input")
        assert plan is not None and plan.check and (r.request_id, "input") in planner._asked
        r.status = status
        planner.cp_on_event(ctx, RequestFinished(1.0, r))
        ended[status] = (r.request_id, "input") in planner._asked
    # gone: dropped; completed: its verdict may still come (an async check after the reply)
    assert ended == {RequestStatus.CANCELLED: False, RequestStatus.FAILED: False, RequestStatus.REJECTED: False,
                     RequestStatus.COMPLETED: True}


def test_an_async_prompt_checks_verdict_is_cached_as_the_prompts_not_the_answers():
    # async: the prompt's check is still running when the answer's starts; each verdict is cached under
    # its own stage (the prompt's verdict was stored as the answer's, and the answer's own was dropped)
    plugins = {**_guard(), "settings": {"sampled-guardian": {"rate": 1.0, "mode": "async", "verdict_ttl_s": 600.0,
                                                             "stages": ["input", "output"]}}}
    res = replay_with(trace=_repeats([0.0, 20.0]), plugins=plugins, sim={"guardian_latency_s": 5.0})
    r0 = [(d.action, d.payload["stage"]) for d in res.decisions if d.subject == "r0" and d.action.startswith("guardian")]
    assert r0 == [("guardian_check", "input"), ("guardian_check", "output"),  # both in flight at once
                  ("guardian_verdict", "input"), ("guardian_verdict", "output")]
    r1 = [(d.action, d.payload.get("stage")) for d in res.decisions if d.subject == "r1" and d.action.startswith("guardian")]
    assert r1 == [("guardian_cached", "input"), ("guardian_cached", "output")]  # within the TTL: no check


def test_cached_verdicts_are_a_tenants_own_under_per_tenant_block_rates():
    # the cache ignored the tenant: acme (block rate 0) got bob's blocks as guardian_cached decisions
    prompts = [f"prompt {i}" for i in range(40)]
    trace = [TraceRequest(f"{tenant}{i}", t0 + i * 0.5, 12, 8, tenant=tenant, prompt=p, params=(("temperature", 0),))
             for t0, tenant in ((0.0, "bob"), (100.0, "acme")) for i, p in enumerate(prompts)]
    res = replay_with(trace=trace, plugins=_guard(verdict_ttl_s=3600.0, stages=["input", "output"]),
                      sim={"guardian_block_rate": 0.0, "guardian_tenant_block_rates": {"bob": 0.5, "acme": 0.0}})
    blocked = {r.request_id for r in res.requests if r.status is RequestStatus.BLOCKED}
    assert blocked and all(rid.startswith("bob") for rid in blocked)  # bob's harmful prompts, acme's never
    cached = [d for d in res.decisions if d.action == "guardian_cached"]
    assert not [d for d in cached if d.subject.startswith("acme")]  # acme's texts were never checked for acme
    # without per-tenant rates a verdict is the text's: acme's repeats take bob's verdicts
    res = replay_with(trace=trace, plugins=_guard(verdict_ttl_s=3600.0, stages=["input", "output"]),
                      sim={"guardian_block_rate": 0.0})
    assert {d.subject[:4] for d in res.decisions if d.action == "guardian_cached"} == {"acme"}
