"""`slo-planner`'s `hold_unit`: a count the hold keeps stands for the rate it was wanted for (`RateHold`),
served at the capacity now; off by default and then changing nothing."""

from __future__ import annotations

import functools

from controlplane.testing import make_trace
from plugins.autoscaling_hold import RateHold
from tests.fixtures.common import planner_replay, with_burst
from tests.plugins.test_autoscaling_policies import scale_events


def test_a_kept_count_is_the_replicas_its_rate_needs_now_and_never_more_than_the_count():
    h = RateHold(300.0, "rate")
    h.add(0.0, 8, 2.0)  # 8 replicas of 2 req/s: 16 req/s
    h.add(1.0, 2, 6.0)  # then 2 of 6 req/s (counts 1-2: 12 req/s)
    assert h.rate[8] == 16.0 and h.rate[2] == 12.0
    assert h.count(8, 6.0) == 3  # 16 req/s at 6 req/s a replica
    assert h.count(8, 1.0) == 8  # a smaller capacity now: never more than the count
    assert h.count(0, 6.0) == 0
    w = RateHold(300.0, "rate_window")
    w.add(0.0, 8, 2.0)
    w.add(1.0, 2, 6.0)
    assert w.count(8, 100.0) == 4  # at the window's mean capacity, 4 req/s
    w.add(400.0, 1, 6.0)  # the first two ticks left the window
    assert w.count(8, 100.0) == 3


def _trace():
    """Short prompts at 1 req/s for 600 s, with a 15 s burst of long prompts at 20 req/s from 60 s."""
    return with_burst(make_trace(600, qps=1.0, prompt_tokens=256, output_tokens=64, seed=3),
                      make_trace(300, qps=20.0, prompt_tokens=4096, output_tokens=64, seed=11), 60.0)


@functools.cache
def _replay(**settings):
    return planner_replay(_trace(), **settings)


def test_off_by_default_and_off_changes_nothing():
    base, off = _replay(), _replay(hold_unit="replicas")
    assert scale_events(base) == scale_events(off)
    assert [d.reason for d in base.decisions] == [d.reason for d in off.decisions]
    assert not any("serve its rate now" in d.reason for d in base.decisions)


def test_on_the_hold_keeps_what_the_bursts_rate_needs_once_the_shape_is_back():
    base, on = _replay(), _replay(hold_unit="rate")
    top = max(e[2] for e in scale_events(base))
    assert top == max(e[2] for e in scale_events(on)) and top >= 4  # the same burst response
    # replicas: the burst's count kept the delay; rate: fewer once short prompts raise a replica's capacity
    downs = [d for d in on.decisions if d.action == "scale" and "serve its rate now" in d.reason]
    assert downs and all(d.payload["to"] < d.payload["from"] for d in downs)
    assert on.summary["gpu_seconds"] < base.summary["gpu_seconds"]
    window = _replay(hold_unit="rate_window")
    assert window.summary["gpu_seconds"] <= base.summary["gpu_seconds"]
