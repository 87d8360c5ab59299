"""The SLO planner's forecast pieces as it asks them at every tick: the burst curve's rate from the bins with
arrivals alone (the same floats as the dense arrays), and the forecaster's answers, kept between closed buckets."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from plugins.autoscaling_forecast import BurstCurve, RateForecaster


def _bits(values: tuple[float, ...]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


@pytest.mark.parametrize("seed", range(3))
def test_the_burst_rate_from_the_bins_with_arrivals_is_the_dense_arrays_bit_for_bit(seed):
    """`BurstCurve.rate` reads only the bins with arrivals: for any bin length, memory, windows (longer than
    the memory too), weights (requests, token counts, fractions), arrivals a little out of order and ticks
    that come late, its (rate, window, arrivals) are the dense cumulative sum's, bit for bit."""
    rng = random.Random(seed)
    checked = 0
    for _ in range(300):
        bin_s = rng.choice([1.0, 0.5, 2.0, 0.3])
        windows = tuple(rng.sample([1.0, 2.0, 5.0, 10.0, 30.0, 100.0], rng.randint(1, 3)))
        curve = BurstCurve(bin_s, rng.choice([5.0, 60.0, 30.0, 7.3]), windows)
        kind, now = rng.randrange(3), 0.0
        for _ in range(200):
            now += rng.expovariate(rng.choice([0.2, 1.0, 5.0, 50.0]))
            weight = (1.0, float(rng.randint(1, 5000)), rng.lognormvariate(0.0, 3.0))[kind]
            curve.add(now - (rng.random() * bin_s if rng.random() < 0.1 else 0.0), weight)
            if rng.random() < 0.5:
                tick, delay = now + rng.random() * rng.choice([0.0, 1.0, 10.0, 100.0]), rng.choice([0.2, 1.0, 1.9])
                seen = curve.rate(tick, delay)  # prunes the bins to the memory
                last = math.floor(tick / bin_s + 1e-9)
                if curve._bins and curve._bins[-1][0] <= last:
                    assert _bits(seen) == _bits(curve._rate_dense(last, delay))
                    checked += 1
    assert checked > 10_000


def test_a_negative_weight_or_a_bin_ahead_of_the_tick_takes_the_dense_arrays():
    curve = BurstCurve(1.0, 60.0, (5.0,))
    curve.add(10.0, 3.0)
    curve.add(12.0, 2.0)
    assert curve.rate(12.5, 1.0) == (5.0 / 4.0, 3.0, 5.0)  # 3 bins so far: the 5 s window is all 3
    assert curve.rate(11.5, 1.0) == curve._rate_dense(11, 1.0) == (5.0 / 3.0, 2.0, 5.0)  # bin 12 counts in 11
    curve.add(13.0, -1.0)
    assert not curve._sparse and curve.rate(13.5, 1.0) == (4.0 / 5.0, 4.0, 4.0)


def test_the_forecasters_answers_are_kept_until_a_bucket_closes():
    """`recent_max`, `excess_cv` and `relative_error` read closed buckets only: asked at every tick
    they answer what a fresh computation would, changing when (and only when) a bucket closes."""
    rng = random.Random(2)
    f = RateForecaster(10.0, 0.5, 0.2, 0.9, 12)
    for t in range(1, 2000):
        f.add(float(t), rng.choice([0.0, 1.0, 3.0, rng.expovariate(0.1)]))
        assert f.recent_max(60.0) == f._recent_max(60.0)
        assert f.excess_cv(5) == f._excess_cv(5) and f.relative_error() == f._relative_error()
    assert f.num_buckets == 199


@pytest.mark.parametrize("errors", ["absolute", "signed"])
def test_the_forecast_band_is_numpys_error_quantile_however_the_errors_change(errors):
    """The band's error quantile is computed again only when the errors changed: asked at every tick, and
    with the errors set by hand between two asks, it is numpy's quantile of them."""
    rng = random.Random(3)
    f = RateForecaster(10.0, 0.5, 0.2, 0.9, 12, errors=errors)
    for t in range(1, 1500):
        f.add(float(t), rng.choice([0.0, 0.0, 1.0, 3.0, rng.expovariate(0.1)]))
        if t % 97 == 0:
            f.residuals[-1] = rng.choice([0.0, -0.0, 2.0, -3.5])
        if len(f.residuals) >= 3:
            band = np.asarray(f.residuals) if errors == "signed" else np.abs(f.residuals)
            err = max(0.0, float(np.quantile(band, 0.9)))
            point, upper = f.forecast(30.0)
            assert _bits((upper,)) == _bits((point + err * f.spread(3),))
