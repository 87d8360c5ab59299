"""`slo-planner`'s `miss_budget`: the SLO's miss budget (`MissBudget`) lets the hold give up replicas below the
count it keeps, as many as the spare misses cover at the charge of one replica's rate over the horizon; off by
default and then changing nothing."""

from __future__ import annotations

import functools

import pytest

from controlplane.testing import make_trace
from controlplane.types import Request, RequestStatus
from plugins.autoscaling_budget import (MissBudget, OnsetCosts, backlog_record, episode_count, gap_guard,
                                         meets_targets)
from plugins.autoscaling_hold import RecurrenceHold
from plugins.autoscaling_slo import SLOPlanner
from tests.fixtures.common import planner_replay, with_burst
from tests.plugins.test_autoscaling_policies import scale_events


def test_the_spare_is_the_budget_of_the_finished_less_the_misses_and_buys_replicas_at_their_charge():
    b = MissBudget(0.01, risk=0.5)
    assert b.spare == 0 and b.releasable(4.0, 30.0) == 0  # nothing finished: nothing to spend
    for i in range(1000):
        b.add(met=i % 500 != 0)  # 2 misses in 1,000
    assert b.finished == 1000 and b.misses == 2
    assert b.spare == pytest.approx(8.0)
    assert b.per_replica(0.2, 30.0) == pytest.approx(3.0)  # 0.5 x 0.2 req/s x 30 s
    assert b.releasable(0.2, 30.0) == 2  # floor(8 / 3)
    assert b.releasable(4.0, 30.0) == 0  # one replica's charge (60) is more than the spare
    assert b.releasable(0.0, 30.0) == 0
    for _ in range(20):
        b.add(met=False)  # over budget: nothing below the hold
    assert b.spare < 0 and b.releasable(0.2, 30.0) == 0


def test_a_budget_or_risk_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="miss_budget must be in"):
        MissBudget(1.0)
    with pytest.raises(ValueError, match="miss_budget_risk must be in"):
        MissBudget(0.01, risk=0.0)
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.0)
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.01, miss_budget_risk=1.5)


def _request(status, ttft, tpot, output=11):
    r = Request("r", 10.0, 100, output)
    r.status, r.output_tokens = status, output
    r.first_token_s = 10.0 + ttft
    r.finish_s = r.first_token_s + tpot * (output - 1)
    return r


def test_a_request_meets_the_targets_as_the_benchmark_counts_it():
    assert meets_targets(_request(RequestStatus.COMPLETED, 1.5, 0.05), 2.0, 0.1)
    assert not meets_targets(_request(RequestStatus.COMPLETED, 2.5, 0.05), 2.0, 0.1)
    assert not meets_targets(_request(RequestStatus.COMPLETED, 1.5, 0.2), 2.0, 0.1)
    assert meets_targets(_request(RequestStatus.COMPLETED, 1.5, 9.0, output=1), 2.0, 0.1)  # no TPOT to miss
    assert not meets_targets(_request(RequestStatus.REJECTED, 1.5, 0.05), 2.0, 0.1)


def _trace():
    """Short prompts at 0.5 req/s for ~1,600 s, with 20 s bursts of 12 req/s every 300 s from 100 s: a load
    never called steady, where the hold keeps each burst's count through the quiet minutes."""
    trace = make_trace(800, qps=0.5, prompt_tokens=256, output_tokens=64, seed=3)
    for i, at in enumerate((100.0, 400.0, 700.0, 1000.0, 1300.0)):
        trace = with_burst(trace, make_trace(240, qps=12.0, prompt_tokens=512, output_tokens=64, seed=11 + i), at)
        trace = [type(r)(f"{i}{r.request_id}", r.arrival_s, r.prompt_tokens, r.output_tokens) for r in trace]
    return trace


@functools.cache
def _replay(**settings):
    return planner_replay(_trace(), **settings)


def test_off_by_default_and_a_budget_too_small_to_buy_a_replica_changes_nothing():
    base, tiny = _replay(), _replay(miss_budget=1e-6)
    assert SLOPlanner.Settings().miss_budget is None
    assert scale_events(base) == scale_events(tiny)
    assert base.summary["gpu_seconds"] == tiny.summary["gpu_seconds"]
    assert not any("miss budget" in d.reason for d in base.decisions)


def test_a_spare_budget_gives_up_replicas_below_the_hold_and_says_so():
    base, on = _replay(), _replay(miss_budget=0.2, miss_budget_risk=0.05)
    top = max(e[2] for e in scale_events(base))
    assert top == max(e[2] for e in scale_events(on)) and top >= 2  # the same burst response
    below = [d for d in on.decisions if d.action == "scale" and "miss budget" in d.reason]
    assert below and all(d.payload["to"] < d.payload["from"] for d in below)
    assert on.summary["gpu_seconds"] < base.summary["gpu_seconds"]
    # the worst-case charge at the same budget buys fewer replicas: never fewer GPU-seconds than the lighter one
    worst = _replay(miss_budget=0.2, miss_budget_risk=1.0)
    assert on.summary["gpu_seconds"] <= worst.summary["gpu_seconds"] <= base.summary["gpu_seconds"]


def test_an_onset_counts_the_misses_that_arrived_within_its_horizon_against_the_replicas_it_was_short():
    o = OnsetCosts()
    o.tick(10.0, 3, 0, 4.0, 30.0)  # from zero: the cold start, no onset
    o.tick(20.0, 2, 2, 4.0, 30.0)  # wants no more than it had: none
    assert o.onsets == []
    o.tick(30.0, 3, 2, 4.0, 30.0)  # an onset: 1 short, 4 req/s x 30 s = 120 per short replica
    o.tick(40.0, 5, 3, 4.0, 30.0)  # within its horizon: short by 5 - 2 = 3 at most
    o.tick(70.0, 6, 5, 4.0, 30.0)  # past its end (60 s): a new onset, 1 short
    assert [(a, b, short) for a, b, _, short, _, _ in o.onsets] == [(30.0, 60.0, 3), (70.0, 100.0, 1)]
    for arrival in (25.0, 30.0, 45.0, 60.0, 65.0, 80.0):
        o.missed(arrival)  # 25 and 65: outside every onset
    assert [m for *_, m in o.onsets] == [3, 1]
    assert o.share(89.0, 1) is None  # the first settles a horizon after its end (90 s)
    assert o.share(90.0, 1) == pytest.approx(3 / (3 * 120.0))
    assert o.share(90.0, 2) is None
    assert o.share(130.0, 2) == pytest.approx(4 / (3 * 120.0 + 120.0))


def test_the_onsets_charge_is_the_worst_case_until_onsets_settle_then_their_share_at_least_the_risk():
    b = MissBudget(0.01, risk=0.25, charge="onsets", min_onsets=1)
    assert b.per_replica(4.0, 30.0) == pytest.approx(30.0)  # before any tick: the risk
    b.tick(0.0, 2, 1, 4.0, 30.0)
    assert b.share == 1.0  # no onset settled: the worst case
    for _ in range(60):
        b.add(met=False, arrival_s=10.0)  # 60 misses in the onset, 1 replica short of 120: share 0.5
    b.tick(60.0, 1, 2, 4.0, 30.0)
    assert b.share == pytest.approx(0.5) and b.per_replica(4.0, 30.0) == pytest.approx(60.0)
    cheap = MissBudget(0.01, risk=0.25, charge="onsets", min_onsets=1)
    cheap.tick(0.0, 2, 1, 4.0, 30.0)
    cheap.add(met=False, arrival_s=10.0)
    cheap.tick(60.0, 1, 2, 4.0, 30.0)
    assert cheap.share == 0.25  # 1 / 120 measured: never below the risk
    fixed = MissBudget(0.01, risk=0.25)
    fixed.tick(0.0, 2, 1, 4.0, 30.0)
    assert fixed.share == 0.25 and fixed.onsets is None
    with pytest.raises(ValueError, match="miss_budget_charge must be"):
        MissBudget(0.01, charge="mean")
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.01, miss_budget_charge="mean")
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.01, miss_budget_releases="some")


def test_the_episode_count_is_the_largest_wanted_within_the_horizon():
    last = {1: 100.0, 2: 100.0, 3: 95.0, 4: 60.0}
    assert episode_count(last, 100.0, 30.0) == 3
    assert episode_count(last, 126.0, 30.0) == 2
    assert episode_count(last, 200.0, 30.0) == 0


def test_the_release_gives_up_only_counts_whose_episode_is_over():
    # the same spare and charge: released below any count kept ("any", the last round's) or only below counts not
    # wanted within the horizon ("over", the default) - which keeps more, and never scales below a count just wanted
    anyk = _replay(miss_budget=0.2, miss_budget_risk=0.05, miss_budget_releases="any")
    over = _replay(miss_budget=0.2, miss_budget_risk=0.05)
    base = _replay()
    assert SLOPlanner.Settings().miss_budget_releases == "over"
    assert anyk.summary["gpu_seconds"] < over.summary["gpu_seconds"] < base.summary["gpu_seconds"]
    released = [[d for d in run.decisions if d.action == "scale" and "miss budget" in d.reason] for run in (anyk, over)]
    assert 0 < len(released[1]) < len(released[0])  # "any" gives up counts a tick after they were wanted, again and again


def test_a_reserve_keeps_part_of_the_allowance_unspent():
    b = MissBudget(0.01, risk=0.5, reserve=0.25)
    for i in range(1000):
        b.add(met=i % 500 != 0)  # 2 misses in 1,000: 10 allowed, 7.5 spendable
    assert b.spare == pytest.approx(5.5)
    assert b.releasable(0.2, 30.0) == 1  # floor(5.5 / 3); without the reserve 2
    assert SLOPlanner.Settings().miss_budget_reserve == 0.0
    with pytest.raises(ValueError, match="miss_budget_reserve must be in"):
        MissBudget(0.01, reserve=1.0)
    with pytest.raises(ValueError):
        SLOPlanner.Settings(miss_budget=0.01, miss_budget_reserve=-0.1)


def test_the_gap_guard_keeps_counts_whose_known_return_is_too_near_and_starts_them_ahead_of_it():
    hold = RecurrenceHold(300.0, 1.0, rearm_lead=2.0)  # horizon 20 s: the lead is 40 s; a cold start 30 s
    for t, want in ((0.0, 3), (10.0, 1), (100.0, 3), (110.0, 1), (300.0, 5), (310.0, 1)):
        hold.add(t, want, 20.0)  # counts 2, 3 came back after 100 s and 200 s; 4, 5 have no known return
    assert min(hold.gaps[3]) == pytest.approx(100.0) and 4 not in hold.gaps
    assert gap_guard(hold, 320.0, 20.0, 30.0) == (5, 0)  # 5 wanted 20 s ago: its episode is not over
    # 25 s after: 4 and 5 (no known return) may go; 3's soonest return (100 s) is 75 s away, 35 s after its
    # restart 40 s ahead: more than a cold start, so it may go too; 1 was wanted within the horizon
    assert gap_guard(hold, 325.0, 20.0, 30.0) == (1, 0)
    assert gap_guard(hold, 331.0, 20.0, 30.0) == (3, 0)  # 29 s off before the restart: less than a cold start
    assert gap_guard(hold, 361.0, 20.0, 30.0) == (3, 3)  # its return within the lead: start it again
    # past 100 s without it: the next known return (200 s) is far again, for 1 (gaps 90 s, 190 s) as well
    assert gap_guard(hold, 405.0, 20.0, 30.0) == (0, 0)
    assert gap_guard(hold, 700.0, 20.0, 30.0) == (0, 0)  # every count past its hold


def test_the_gaps_release_gives_up_a_recurring_count_between_its_returns_and_starts_it_ahead_of_them():
    # the bursts come back every 300 s: "over" gives the burst count up and meets each burst from one replica;
    # "gaps" gives it up too but starts it again ahead of its known return - nearly the plain hold's SLO, fewer
    # GPU-seconds
    base, over = _replay(), _replay(miss_budget=0.2, miss_budget_risk=0.05)
    gaps = _replay(miss_budget=0.2, miss_budget_risk=0.05, miss_budget_releases="gaps")
    assert over.summary["gpu_seconds"] < gaps.summary["gpu_seconds"] < base.summary["gpu_seconds"]
    assert over.summary["slo_attainment"] < gaps.summary["slo_attainment"] - 0.02
    assert gaps.summary["slo_attainment"] >= base.summary["slo_attainment"] - 0.002
    ahead = [d for d in gaps.decisions if d.action == "scale" and "started again" in d.reason]
    assert ahead and all(d.payload["to"] > d.payload["from"] for d in ahead)
    for burst in (700.0, 1000.0, 1300.0):  # up before each burst once its gap is known; "over" only after it
        assert any(burst - 60.0 < t < burst and to > fr for t, fr, to in scale_events(gaps)[:-1])
        assert not any(burst - 60.0 < t < burst and to > fr for t, fr, to in scale_events(over))


def test_a_want_raised_by_the_queue_into_the_released_counts_does_not_renew_their_hold():
    # the hold kept 11, the budget released it to 10: a queue that raises the want back to 11 records 10 (or the
    # want without the queue when higher); a want above the hold's count, one below the release, or one without a
    # queue is recorded as it is
    assert backlog_record(wanted=11, unqueued=9, kept=11, released_to=10) == 10
    assert backlog_record(wanted=11, unqueued=9, kept=12, released_to=9) == 9
    assert backlog_record(wanted=11, unqueued=10, kept=12, released_to=8) == 10
    assert backlog_record(wanted=12, unqueued=9, kept=11, released_to=10) == 12  # above the hold: a new want
    assert backlog_record(wanted=10, unqueued=9, kept=11, released_to=10) == 10  # not into the released counts
    assert backlog_record(wanted=11, unqueued=11, kept=11, released_to=10) == 11  # wanted without the queue
    assert SLOPlanner.Settings().miss_budget_backlog_renews is True
    # on a load whose bursts outrun the replicas (a queue at each onset): fewer GPU-seconds than the plain release
    plain, skip = _queued_replay(), _queued_replay(miss_budget_backlog_renews=False)
    assert skip.summary["gpu_seconds"] < plain.summary["gpu_seconds"]


def test_no_replica_that_is_up_is_released_into_a_queue_when_queued_releases_are_off():
    assert SLOPlanner.Settings().miss_budget_release_queued is True

    def released_into_a_queue(run):
        return [d for d in run.decisions if d.action == "scale" and "miss budget" in d.reason
                and d.payload["to"] < d.payload["from"] and d.payload["signals"]["queued"] > 0]

    assert released_into_a_queue(_queued_replay())  # the plain release takes replicas down with requests queued
    assert not released_into_a_queue(_queued_replay(miss_budget_release_queued=False))


@functools.cache
def _queued_replay(**settings):
    """4 req/s for 1,600 s with 20 s bursts of 40 req/s every 300 s from 100 s: each burst builds a queue;
    the budget (0.2 at 0.05 of the worst case) released below any count the hold keeps."""
    trace = make_trace(6400, qps=4.0, prompt_tokens=256, output_tokens=64, seed=3)
    for i, at in enumerate((100.0, 400.0, 700.0, 1000.0, 1300.0)):
        trace = with_burst(trace, make_trace(800, qps=40.0, prompt_tokens=512, output_tokens=64, seed=11 + i), at)
        trace = [type(r)(f"{i}{r.request_id}", r.arrival_s, r.prompt_tokens, r.output_tokens) for r in trace]
    return planner_replay(trace, miss_budget=0.2, miss_budget_risk=0.05, miss_budget_releases="any", **settings)
