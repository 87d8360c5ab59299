"""The scaling-rules wrapper: bounds, step limits, cooldown and stabilisation around any policy."""

from __future__ import annotations

from itertools import pairwise

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import ScaleDecision
from controlplane.testing import make_trace, replay_with
from plugins.autoscaling_hpa import HpaAutoscaler
from plugins.autoscaling_kpa import KpaAutoscaler
from plugins.autoscaling_seed import SeedAutoscaler
from plugins.scaling_rules import ScalingRules
from tests.fixtures.common import assert_conserved


def _rules(**kw) -> ScalingRules:
    return ScalingRules(ScalingRules.Settings(**kw))


def _d(target: int) -> ScaleDecision:
    return ScaleDecision("default", target, "policy")


def test_bounds_and_steps_are_clamped_and_stated():
    r = _rules(min_replicas=2, max_replicas=6, max_step_up=2, max_step_down=1)
    d = r.clamp(0.0, "default", 3, _d(10))
    assert d.target_replicas == 5 and d.reason == "policy | rules: 10 -> 5 (max 6 replicas; step up at most 2)"
    d = r.clamp(1.0, "default", 3, _d(0))
    assert d.target_replicas == 2 and "min 2 replicas" in d.reason
    d = r.clamp(2.0, "default", 5, _d(2))
    assert d.target_replicas == 4 and "step down at most 1" in d.reason
    same = _d(4)
    assert r.clamp(3.0, "default", 3, same) is same  # nothing to clamp: the policy's decision as is
    with pytest.raises(ValueError):
        ScalingRules.Settings(min_replicas=3, max_replicas=2)


def test_the_bounds_win_over_the_step_limits():
    """{min_replicas: 4, max_step_up: 1} went 1 -> 2 -> 3 -> 4 over three ticks: "never fewer" must hold at once."""
    r = _rules(min_replicas=4, max_replicas=6, max_step_up=1, max_step_down=1)
    d = r.clamp(0.0, "default", 1, _d(1))
    assert d.target_replicas == 4 and d.reason == "policy | rules: 1 -> 4 (min 4 replicas)"
    assert r.clamp(1.0, "default", 1, _d(10)).target_replicas == 4  # up to the bound, past the step limit
    assert r.clamp(2.0, "default", 5, _d(10)).target_replicas == 6  # within the bounds the step limit holds
    d = r.clamp(3.0, "default", 9, _d(2))
    assert d.target_replicas == 6 and "step down at most 1" in d.reason  # down to max_replicas at once, not 8
    assert r.clamp(4.0, "default", 6, _d(4)).target_replicas == 5


def test_cooldown_holds_after_a_change_but_not_outside_the_bounds():
    r = _rules(cooldown_s=60, max_replicas=4)
    assert r.clamp(0.0, "default", 2, _d(3)).target_replicas == 3
    d = r.clamp(30.0, "default", 3, _d(1))
    assert d.target_replicas == 3 and "cooldown: 30s left" in d.reason
    assert r.clamp(45.0, "default", 6, _d(6)).target_replicas == 4  # above max: fixed at once
    assert r.clamp(106.0, "default", 4, _d(1)).target_replicas == 1


def test_a_scale_up_the_cooldown_holds_back_is_stored_once_per_hold():
    """Scale-ups the cooldown held back while the queue grew (138 -> 434 requests) left no stored decision: each hold
    is a ``scale_held`` decision naming the wanted target, once, and is not a scale event."""

    class Wants(Plugin):
        name = "wants"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            want = 1 if ctx.now_s < 5 else 2 if ctx.now_s < 30 else 3
            return ScaleDecision(model, want, f"want {want}")

    res = replay_with(_rules(cooldown_s=60), Wants(), trace=make_trace(400, qps=4),
                      cluster={"models": [{"name": "default", "replicas": 1}]})
    scale = [(round(d.time_s), d.action, d.payload) for d in res.decisions if d.hook == "cp_scale"]
    changes = [s for s in scale if s[1] == "scale"]
    held = [s for s in scale if s[1] == "scale_held"]
    assert [c[2]["to"] for c in changes][:2] == [2, 3] and changes[1][0] >= 65  # the cooldown from the first
    assert [(h[2]["from"], h[2]["to"], h[2]["wanted"]) for h in held] == [(2, 2, 3)]  # once, though held ~35 ticks
    reason = next(d.reason for d in res.decisions if d.action == "scale_held")
    assert "cooldown" in reason and res.summary["num_scale_events"] == len(changes)


def test_a_hold_is_stored_once_across_the_counts_a_policy_keeps_between_its_syncs():
    """hpa keeps the count between its syncs (no held target then): the core took that for the hold's end, and each
    sync in one cooldown stored the same hold again (226, 241, 256 s: ``4 -> 4 (wanted 6)`` three times)."""

    class Syncs(Plugin):
        name = "syncs"

        @hookimpl
        def cp_scale(self, ctx, model, scaling):
            if round(ctx.now_s) % 5:  # between its syncs: the count kept, no want
                return ScaleDecision(model, scaling.num_current, "between syncs", holding=True)
            want = 1 if ctx.now_s < 5 else 2 if ctx.now_s < 30 else 3
            return ScaleDecision(model, want, f"want {want}")

    res = replay_with(_rules(cooldown_s=60), Syncs(), trace=make_trace(400, qps=4),
                      cluster={"models": [{"name": "default", "replicas": 1}]})
    held = [(round(d.time_s), d.payload["wanted"]) for d in res.decisions if d.action == "scale_held"]
    assert len(held) == 1 and held[0][1] == 3, held  # one hold, one wanted target: once
    changes = [d.payload["to"] for d in res.decisions if d.action == "scale"]
    assert changes[:2] == [2, 3]


def test_a_bounds_correction_starts_no_cooldown():
    """A start at 1 raised to min_replicas 2 at t=1 held the planner's first scale-up back until 61 s."""
    r = _rules(cooldown_s=60, min_replicas=2, max_replicas=6)
    assert r.clamp(1.0, "default", 1, _d(1)).target_replicas == 2  # to the bound: the count corrected
    assert r.clamp(5.0, "default", 2, _d(4)).target_replicas == 4  # the policy's first change: not held
    d = r.clamp(30.0, "default", 4, _d(6))
    assert d.target_replicas == 4 and "cooldown: 35s left" in d.reason  # and it starts the cooldown
    assert r.clamp(40.0, "default", 9, _d(9)).target_replicas == 6  # above max: to the bound at once
    d = r.clamp(50.0, "default", 6, _d(3))  # the cooldown of 5 s, not one from the correction at 40 s
    assert d.target_replicas == 6 and "cooldown: 15s left" in d.reason
    assert r.clamp(70.0, "default", 1, _d(5)).target_replicas == 5  # below min, wanting more: a change
    assert r.clamp(80.0, "default", 5, _d(2)).target_replicas == 5  # which starts the cooldown


def test_scale_down_stabilisation_takes_the_max_wanted_in_the_window():
    r = _rules(scale_down_stabilization_s=100)
    assert r.clamp(0.0, "default", 4, _d(4)).target_replicas == 4
    d = r.clamp(50.0, "default", 4, _d(1))
    assert d.target_replicas == 4 and "stabilisation: max wanted in 100s is 4" in d.reason
    assert r.clamp(90.0, "default", 4, _d(2)).target_replicas == 4
    assert r.clamp(120.0, "default", 4, _d(1)).target_replicas == 2  # max(1 at 50, 2 at 90, 1)
    assert r.clamp(121.0, "default", 2, _d(5)).target_replicas == 5  # scale-up is not held


def test_a_count_a_policy_keeps_between_its_syncs_is_no_want():
    """hpa keeps the count between its syncs: counted as wants, they filled the window with the current count and
    blocked every scale-down (3 replicas for a whole light run, hpa wanting 1 at every sync)."""
    r = _rules(scale_down_stabilization_s=60)
    assert r.clamp(0.0, "default", 3, _d(1)).target_replicas == 1  # (its first want: nothing above it yet)
    held = ScaleDecision("default", 3, "between syncs, keep 3", holding=True)
    for t in (1.0, 2.0, 3.0, 4.0):
        assert r.clamp(t, "default", 3, held) is held
    assert r.clamp(5.0, "default", 3, _d(1)).target_replicas == 1  # the wants in the window: 1 and 1


def test_hpa_behind_the_rules_scales_down_on_a_light_load():
    settings = {"hpa": {"metric": "load", "target": 2, "scale_down_stabilization_s": 0, "sync_period_s": 5,
                        "metric_window_s": 0},
                "scaling-rules": {"min_replicas": 1, "max_replicas": 6, "max_step_down": 1, "cooldown_s": 20,
                                  "scale_down_stabilization_s": 60}}
    enabled = ["scaling-rules", "hpa", "queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
               "static-memory", "builtin-latency-models"]
    res = replay_with(trace=make_trace(200, qps=0.5), plugins={"enabled": enabled, "settings": settings},
                      cluster={"models": [{"name": "default", "replicas": 4, "cold_start_s": 10.0}]})
    downs = [(f, t) for _, f, t, _ in _replicas_over_time(res) if t < f]
    assert len(downs) >= 2 and min(t for _, t in downs) <= 2, _replicas_over_time(res)
    assert_conserved(res.summary, res.requests)


class Wild(Plugin):
    """A policy that wants 12 replicas on even ten-seconds and 0 on odd ones."""

    name = "wild"

    @hookimpl
    def cp_scale(self, ctx, model):
        return ScaleDecision(model, 12 if int(ctx.now_s // 10) % 2 == 0 else 0, "wild")


CLUSTER = {"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0}]}


def _replicas_over_time(result):
    return [(d.time_s, d.payload["from"], d.payload["to"], d.reason) for d in result.decisions if d.action == "scale"]


@pytest.mark.parametrize("policy", [Wild, SeedAutoscaler, HpaAutoscaler, KpaAutoscaler], ids=lambda p: p.name)
def test_the_wrapper_clamps_any_policy_in_a_replay(policy):
    rules = _rules(min_replicas=1, max_replicas=3, max_step_up=1, cooldown_s=20)
    trace = make_trace(1500, qps=40, output_tokens=128)
    result = replay_with(rules, policy(), trace=trace, cluster=CLUSTER)
    assert_conserved(result.summary, result.requests)
    events = _replicas_over_time(result)
    assert all(1 <= to <= 3 and to - frm <= 1 for _, frm, to, _ in events), events
    assert all(b[0] - a[0] >= 20 for a, b in pairwise(events)), events
    if policy is Wild:
        assert events and all("rules:" in reason for *_, reason in events)


def test_without_the_wrapper_the_wild_policy_goes_out_of_bounds():
    result = replay_with(Wild(), trace=make_trace(600, qps=20), cluster=CLUSTER)
    assert max(to for _, _, to, _ in _replicas_over_time(result)) == 12


def test_the_docs_example_config_runs():
    import re
    from pathlib import Path

    import yaml

    from controlplane.testing import make_config

    text = (Path(__file__).resolve().parents[2] / "docs" / "autoscaling.md").read_text()
    block = re.search(r"^```yaml\n(.*?)^```$", text, re.DOTALL | re.MULTILINE).group(1)
    overrides = yaml.safe_load(block)
    result = replay_with(trace=make_trace(600, qps=30, output_tokens=128), config=make_config(**overrides))
    assert_conserved(result.summary, result.requests)
    scale = [d for d in result.decisions if d.action == "scale"]
    assert scale and {d.plugin for d in scale} == {"hpa"} and all(d.payload["to"] <= 12 for d in scale)


def test_the_cooldown_runs_from_changes_the_core_applied():
    """A change the rules let through but the core did not apply (a scale-up held back while the last one is
    unplaced) started the cooldown: the next holds blamed a cooldown that never was. The cooldown now starts at a
    change only once the core's ``last_scale_s`` says it was applied."""
    r = _rules(cooldown_s=5)
    assert r.clamp(7.0, "default", 1, _d(3), None).target_replicas == 3  # applied: the next context says 7.0
    d = r.clamp(9.0, "default", 1, _d(3), 7.0)
    assert d.target_replicas == 1 and "cooldown: 3s left" in d.reason
    assert r.clamp(12.0, "default", 1, _d(3), 7.0).target_replicas == 3  # let through, not applied by the core
    d = r.clamp(12.5, "default", 1, _d(3), 7.0)
    assert d.target_replicas == 3 and "cooldown" not in d.reason
    d = r.clamp(14.0, "default", 3, _d(5), 12.5)  # 12.5 was applied: held from then
    assert d.target_replicas == 3 and "cooldown: 4s left" in d.reason


def test_a_change_the_core_undid_starts_no_cooldown_and_a_hold_under_a_second_says_so():
    """A scale-up none of whose replicas the pool placed changed nothing: the core takes its ``last_scale_s`` back
    (here after the next context had confirmed it, as a slow pool answers), and the cooldown runs from the change
    before it; live, an all-unplaced scale-up held the next want as ``cooldown: 0s left``."""
    r = _rules(cooldown_s=5)
    assert r.clamp(1.0, "default", 1, _d(2), None).target_replicas == 2
    assert r.clamp(2.0, "default", 2, _d(2), 1.0).target_replicas == 2  # applied at 1.0
    assert r.clamp(7.0, "default", 2, _d(4), 1.0).target_replicas == 4  # let through
    d = r.clamp(8.0, "default", 2, _d(4), 7.0)  # applied (so far)
    assert d.target_replicas == 2 and "cooldown: 4s left" in d.reason
    d = r.clamp(8.5, "default", 2, _d(4), 1.0)  # then undone: no replica placed; the change at 1.0 holds nothing
    assert d.target_replicas == 4 and "cooldown" not in d.reason
    r = _rules(cooldown_s=2)
    assert r.clamp(23.0, "default", 1, _d(3), None).target_replicas == 3
    assert r.clamp(23.5, "default", 1, _d(3), None).target_replicas == 3  # undone before the next context
    d = r.clamp(24.8, "default", 3, _d(5), 23.5)
    assert d.target_replicas == 3 and d.reason.endswith("(cooldown: 1s left)")
    d = r.clamp(25.3, "default", 3, _d(5), 23.5)
    assert d.target_replicas == 3 and d.reason.endswith("(cooldown: <1s left)")

