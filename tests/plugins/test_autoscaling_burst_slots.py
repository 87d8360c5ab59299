"""plugins/autoscaling_burst_slots.py: the burst rate of replicas whose requests hold batch slots."""

from __future__ import annotations

import pytest

from plugins.autoscaling_burst_slots import slot_burst_rate
from plugins.autoscaling_forecast import BurstCurve

LONE = [0.0] * 10 + [20.0] + [0.0] * 10  # 20 arrivals in one second of a 21-s memory


def test_a_hold_shorter_than_every_window_is_the_constant_rate_bound():
    curve = BurstCurve(1.0, 21.0, (5.0, 10.0))
    for _ in range(20):
        curve.add(10.5)
    assert curve.counts(20.5) == LONE[10:]  # from its first bin with arrivals
    # T below one bin: no window fits inside the hold, so the windows' A(L) / (L + D), BurstCurve.rate's
    assert slot_burst_rate(LONE, 1.0, 21.0, 1.0, 0.5, (5.0, 10.0)) == pytest.approx(curve.rate(20.5, 1.0))
    assert slot_burst_rate(LONE, 1.0, 21.0, 1.0, 0.5, (5.0, 10.0))[0] == pytest.approx(20 / 6)


def test_a_burst_shorter_than_the_hold_asks_for_what_it_adds_to_the_slots():
    mean = 20 / 21
    rate, length, work = slot_burst_rate(LONE, 1.0, 21.0, 1.0, 10.0, (5.0, 10.0))
    # (mean x T + the burst's excess over the mean in its one second) / (T + D); the 10-s window (>= T) gives less
    assert rate == pytest.approx((mean * 10 + 20 - mean) / 11) and (length, work) == (1.0, 20.0)
    assert rate < 20 / 6  # below the constant-rate bound of the 5-s window


def test_a_window_at_least_the_hold_still_binds_where_it_asks_more():
    steady_then_flood = [1.0] * 50 + [10.0] * 10  # ten seconds at ten times the rate
    rate, length, _ = slot_burst_rate(steady_then_flood, 1.0, 60.0, 1.0, 2.0, (10.0,))
    assert length == 10.0 and rate == pytest.approx(100 / 11)


def test_no_arrivals_no_rate():
    assert slot_burst_rate([], 1.0, 60.0, 1.0, 10.0, (5.0,)) == (0.0, 0.0, 0.0)
    assert slot_burst_rate([1.0], 1.0, 60.0, 1.0, 0.0, (5.0,)) == (0.0, 0.0, 0.0)
