"""`slo-planner`'s start-up release (`startup_release`) and its steady-load utilisation
(`steady_target_utilization`): off by default and then changing nothing; on, what each says."""

from __future__ import annotations

import functools

from controlplane.testing import make_trace, replay_with
from plugins.autoscaling_hold import SteadyWant
from tests.plugins.test_autoscaling_policies import scale_events
from tests.plugins.test_autoscaling_slo import CLUSTER, _planner, _steady_heavy_tail

SLO = {"ttft_s": 2.0, "tpot_s": 0.1}


@functools.cache
def _replay(trace_name: str, **kw):
    trace = _steady_heavy_tail() if trace_name == "heavy" else make_trace(
        9000, qps=12.0, prompt_tokens=1024, output_tokens=128, seed=7)
    res = replay_with(_planner(**kw), trace=trace, cluster=CLUSTER, slo=SLO)
    assert res.summary["num_completed"] == len(trace)
    return res


def test_the_steady_lock_can_count_only_scale_ups_made_on_a_steady_load():
    w = SteadyWant(300.0, 0.95, 300.0)
    for t in range(100):
        w.add(float(t), 4)
    w.scaled(50.0, 4, 8)  # a start-up scale-up (not steady)
    assert w.target(99.0, 8, 1) == 8  # the lock counts it
    assert w.target(99.0, 8, 1, steady_ups_only=True) == 4  # no scale-up on a steady load yet: no lock
    w.scaled(60.0, 4, 6, steady=True)
    assert w.target(99.0, 8, 1, steady_ups_only=True) == 8 and w.target(361.0, 8, 1, steady_ups_only=True) == 4


def test_off_by_default_and_off_changes_nothing():
    base = _replay("heavy")
    off = _replay("heavy", startup_release="off", steady_target_utilization=None)
    assert scale_events(base) == scale_events(off)
    assert {k: v for k, v in base.summary.items() if k != "wall_s"} == {k: v for k, v in off.summary.items() if k != "wall_s"}
    assert [d.reason for d in base.decisions] == [d.reason for d in off.decisions]


def test_once_the_load_is_steady_the_quantile_releases_what_the_start_up_raised():
    base, on = _replay("heavy"), _replay("heavy", startup_release="steady")
    before = [e for e in scale_events(base) if e[0] < 300.0]
    assert before == [e for e in scale_events(on) if e[0] < 300.0] and before[-1][2] == 4  # the start: up to 4
    down_off = next(e for e in scale_events(base) if e[2] < e[1])
    down_on = next(e for e in scale_events(on) if e[2] < e[1])
    assert down_off[0] >= before[-1][0] + 300.0  # off: kept the delay after the start-up's scale-up
    assert 300.0 <= down_on[0] < down_off[0]  # on: at the first steady ticks, by the wants' quantile
    d = next(d for d in on.decisions if d.action == "scale" and d.time_s == down_on[0])
    assert "steady load" in d.reason
    assert on.summary["gpu_seconds"] < base.summary["gpu_seconds"]


def test_quantile_runs_the_wants_quantile_before_the_load_can_be_called_steady():
    base, on = _replay("heavy"), _replay("heavy", startup_release="quantile")
    down = next(e for e in scale_events(on) if e[2] < e[1])
    assert down[0] < 300.0 and all(e[0] >= 300.0 for e in scale_events(base) if e[2] < e[1])
    d = next(d for d in on.decisions if d.action == "scale" and d.time_s == down[0])
    assert "start-up: 95% of the wants so far" in d.reason and "steady_want" in d.payload["signals"]


def test_a_steady_load_runs_at_its_own_utilization():
    base, on = _replay("poisson"), _replay("poisson", steady_target_utilization=1.0)
    scales = [d for d in on.decisions if d.action == "scale"]
    assert all(("steady load" in d.reason) == (d.payload["signals"].get("utilization") == 1.0) for d in scales)
    assert any("steady load" in d.reason and "at 100%" in d.reason for d in scales)
    assert not any("utilization" in d.payload["signals"] for d in base.decisions if d.action == "scale")
    assert on.summary["gpu_seconds"] < base.summary["gpu_seconds"]
