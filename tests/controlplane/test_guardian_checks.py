"""How parallel guardian verdicts combine (controlplane.guardian_checks)."""

from __future__ import annotations

from controlplane.guardian_checks import combine
from controlplane.guardian_config import GuardiansConfig


def _config(threshold: float) -> GuardiansConfig:
    return GuardiansConfig(combine="weighted", weighted_threshold=threshold,
                           models=[{"name": "a", "weight": 1.0}, {"name": "b", "weight": 3.0}])


def test_weighted_with_a_zero_threshold_blocks_on_any_blocker_and_passes_when_none_blocks():
    # weighted_threshold 0 (allowed) used to block every request: two passes gave verdict "block"
    # with no guardian and no reason
    passes = {"a": ("pass", 0.1, "ok"), "b": ("pass", 0.2, "ok")}
    out = combine(_config(0.0), None, passes)
    assert (out.verdict, out.guardian) == ("pass", "a,b")
    out = combine(_config(0.0), None, {**passes, "a": ("block", 0.9, "unsafe")})
    assert (out.verdict, out.guardian, out.reason) == ("block", "a", "unsafe")


def test_weighted_blocks_when_the_blockers_hold_the_threshold_share_of_the_weight():
    one_blocks = {"a": ("block", 0.9, "unsafe"), "b": ("pass", 0.2, "ok")}
    assert combine(_config(0.25), None, one_blocks).verdict == "block"  # 1 of 4
    assert combine(_config(0.5), None, one_blocks).verdict == "pass"


def _failing(**specs) -> GuardiansConfig:
    return GuardiansConfig(weighted_threshold=0.6, models=[{"name": "g1"}, *(
        {"name": name, "on_error": on_error} for name, on_error in specs.items())])


def test_a_guardian_that_failed_open_votes_pass_under_majority_and_weighted():
    # it abstained: g1's one block of the two guardians blocked under majority, and weighted read
    # 1.0 >= 0.6 of the voters' weight, as if g1 were alone
    verdicts = {"g1": ("block", 0.9, "unsafe"), "g3": ("timeout", None, "no verdict within 0.001 s")}
    config = _failing(g3="open")
    for rule in ("majority", "weighted"):
        out = combine(config, rule, verdicts)
        assert out.verdict == "timeout", rule  # not blocked, and no guardian passed it: the failure says so
    assert combine(config, "any", verdicts).verdict == "block"


def test_a_closed_failure_votes_block_and_an_open_one_pass():
    verdicts = {"g2": ("timeout", None, "late"), "g3": ("timeout", None, "late")}
    config = _failing(g2="closed", g3="open")
    assert combine(config, "majority", verdicts).verdict == "timeout"  # one block of two: not a majority
    assert combine(config, "any", verdicts).verdict == "block"
    passes = {"g1": ("pass", 0.1, "ok"), "g3": ("error", None, "boom")}
    out = combine(_failing(g3="open"), "majority", passes)
    assert (out.verdict, out.guardian) == ("pass", "g1")  # the guardian that passed it, not the failure


def test_a_replay_blocks_nothing_when_one_of_two_guardians_blocks_and_the_other_fails_open():
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(str(i), i / 5, 32, 8) for i in range(300)]
    models = [{"name": "g1"}, {"name": "g2", "timeout_s": 0.001, "on_error": "closed", "latency": {"base_s": 0.5}},
              {"name": "g3", "timeout_s": 0.001, "on_error": "open", "latency": {"base_s": 0.5}}]

    def blocked(guardians: list[str], rule: str) -> int:
        res = replay_with(trace=trace, guardians={"weighted_threshold": 0.6, "models": models},
                          sim={"guardian_block_rate": 0.2},
                          plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                                     "guardians": guardians, "combine": rule}}})
        return res.summary["num_blocked"]

    assert blocked(["g1"], "any") > 30  # g1 alone blocks about 20%
    assert blocked(["g1", "g3"], "majority") == 0  # was g1's blocks: g3's timeout abstained
    assert blocked(["g1", "g3"], "weighted") == 0  # 0.5 of the weight < 0.6
    assert blocked(["g2", "g3"], "majority") == 0  # was every request: g2's closed timeout alone voted


def test_a_blocked_outcome_names_each_guardian_once():
    # the row's reason is "blocked by {guardian}: {reason}": a reason that named the guardian again
    # read "blocked by judge: judge: ..." (one blocker of a group) and "blocked by slow: slow: no verdict"
    config = _failing(slow="closed")
    one = combine(config, "any", {"g1": ("block", 0.9, "P(unsafe) = 0.900"), "slow": ("pass", 0.1, "ok")})
    assert (one.guardian, one.reason) == ("g1", "P(unsafe) = 0.900")
    failed = combine(config, "any", {"g1": ("pass", 0.1, "ok"), "slow": ("timeout", None, "no verdict within 2 s")})
    assert (failed.guardian, failed.reason) == ("slow", "timeout, no verdict within 2 s (on_error: closed)")
    both = combine(config, "any", {"slow": ("block", 0.8, "matched"), "g1": ("block", 0.9, "P(unsafe) = 0.900")})
    assert (both.guardian, both.reason) == ("slow,g1", "matched; P(unsafe) = 0.900")  # in the verdicts' order


def test_blockers_are_named_in_the_plans_order_with_their_reasons_in_the_same_order():
    # "blocked by A,B" listed the guardians by name (judge,rules) where the plan, the docs and the
    # guardian_check decision name them in the plan's order (rules,judge)
    from controlplane.testing import make_trace, replay_with

    config = GuardiansConfig(models=[{"name": "rules"}, {"name": "judge"}])
    out = combine(config, "any", {"rules": ("block", 1.0, "phrase"), "judge": ("block", 0.9, "P 0.9")})
    assert (out.guardian, out.reason) == ("rules,judge", "phrase; P 0.9")
    models = [{"name": "zeta", "threshold": 0.0, "latency": {"base_s": 0.5}}, {"name": "alpha", "threshold": 0.0}]
    res = replay_with(trace=make_trace(4, qps=2), guardians={"models": models}, plugins={"settings": {
        "sampled-guardian": {"rate": 1.0, "mode": "sync", "guardians": ["zeta", "alpha"]}}})
    assert {r.reason.split(":")[0] for r in res.requests} == {"blocked by zeta,alpha"}
    check = next(d for d in res.decisions if d.action == "guardian_check")
    outcome = next(d for d in res.decisions if d.action == "guardian_outcome")
    assert check.payload["guardian"] == outcome.payload["guardian"] == "zeta,alpha"
    assert list(outcome.payload["verdicts"]) == ["zeta", "alpha"]


def test_a_recorded_outcome_pairs_the_guardians_it_names_with_their_own_score():
    # A majority's pass read {"guardian": "rules,judge", "score": 0.5279}: the score of clf, the
    # guardian the majority outvoted; the cached verdict's guardian_cached row repeated it.
    from controlplane.decisions import GuardianPlan
    from controlplane.guardian_checks import CheckGroup, outcome_payload

    config = GuardiansConfig(models=[{"name": "rules"}, {"name": "judge"}, {"name": "clf"}])
    verdicts = {"rules": ("pass", 0.0, "no rule matched"), "judge": ("pass", 0.31, "P(unsafe) = 0.310"),
                "clf": ("block", 0.5279, "P(label 1) = 0.528")}
    group = CheckGroup(None, "output", "sync", GuardianPlan(True, guardians=("rules", "judge", "clf")), set(),
                       verdicts=verdicts)
    out = combine(config, "majority", group.in_plan_order())
    payload = outcome_payload(group, out)
    assert (payload["guardian"], payload["verdict"], payload["score"]) == ("rules,judge", "pass", 0.31)
    assert payload["scores"] == {"rules": 0.0, "judge": 0.31, "clf": 0.5279}
    assert out.score == 0.5279  # the group's highest: what a cascade's then_above compares, as before
    blocked = combine(config, "any", {"rules": ("pass", 0.9, "ok"), "clf": ("block", 0.6, "P(label 1) = 0.600")})
    assert (blocked.guardian, blocked.score) == ("clf", 0.6)  # the blocker's, not the passing guardian's 0.9


def test_a_replays_outcome_and_cached_rows_carry_the_named_guardians_score():
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    # clf blocks everything, the two others almost nothing: a majority passes, clf outvoted
    models = [{"name": "rules", "threshold": 0.99, "quality": {"noise": 0.5}},
              {"name": "judge", "threshold": 0.99, "quality": {"noise": 0.5}},
              {"name": "clf", "threshold": 0.0, "quality": {"separation": 0.0}}]  # scores 0.5, blocks all
    trace = [TraceRequest(f"r{i}", i * 2.0, 12, 8, prompt=f"prompt {i % 3}") for i in range(6)]
    res = replay_with(trace=trace, guardians={"models": models}, plugins={
        "enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                    "sampled-guardian", "builtin-latency-models"],
        "settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync", "guardians": ["rules", "judge", "clf"],
                                          "combine": "majority", "verdict_ttl_s": 60.0}}})
    outcomes = [d.payload for d in res.decisions if d.action == "guardian_outcome"]
    cached = [d.payload for d in res.decisions if d.action == "guardian_cached"]
    assert len(outcomes) == 3 and len(cached) == 3  # each prompt checked once, then its verdict cached
    for p in outcomes:
        assert p["guardian"] == "rules,judge" and p["verdict"] == "pass"
        assert p["score"] == max(p["scores"]["rules"], p["scores"]["judge"]) < p["scores"]["clf"]
    assert {(c["guardian"], c["score"]) for c in cached} == {(p["guardian"], p["score"]) for p in outcomes}
