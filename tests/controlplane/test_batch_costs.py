"""GPU-seconds per iteration, prefilled and decoded token, fitted to a run's batches."""

from __future__ import annotations

import pytest

from controlplane.batch_costs import BatchCosts


def test_the_fit_recovers_the_costs_the_batches_followed():
    costs = BatchCosts()
    for k, p, d in ((1, 512, 0), (1, 0, 8), (4, 0, 32), (2, 100, 10), (1, 64, 40), (3, 0, 90)):
        costs.add(k, p, d, 0.011 * k + 0.00006 * p + 0.00025 * d)
    assert costs.fit() == pytest.approx((0.011, 0.00006, 0.00025))


def test_a_negative_coefficient_is_left_out_and_no_batch_gives_none():
    assert BatchCosts().fit() is None
    costs = BatchCosts()
    for k, p, d in ((1, 100, 0), (1, 200, 0), (1, 0, 10), (1, 50, 20)):
        costs.add(k, p, d, 0.5 - 0.001 * p + 0.01 * d if p else 0.5 + 0.01 * d)  # "prefill makes batches faster"
    a, b, c = costs.fit()
    assert b == 0.0 and a >= 0 and c >= 0
