"""GPU-seconds per iteration, prefilled and decoded token, fitted to a run's batches."""

from __future__ import annotations

import pytest

from controlplane.batch_costs import BatchCosts


def _cost(p: int, d: int) -> float:
    return 0.011 + 0.00006 * p + 0.00025 * d


def test_the_fit_recovers_the_costs_the_iterations_followed():
    costs = BatchCosts()
    for p, d in ((512, 0), (0, 8), (100, 10), (64, 40), (0, 30)):
        costs.add(p, d, _cost(p, d))
    costs.add(200, 4, _cost(200, 4), 5, 6, 5 * _cost(0, 6))  # a prefill, then 5 decodes of 6 requests
    assert costs.fit() == pytest.approx((0.011, 0.00006, 0.00025))


def test_a_batch_of_several_iterations_adds_what_its_iterations_one_by_one_add():
    # The simulator's fast mode reports a batch of k iterations once, the exact mode each iteration: the fit must
    # see the same observations (as one observation of the batch's totals it weighed a long run as one point, and
    # the two modes' cache_gpu_seconds_saved differed, 136.94 against 139.90).
    times = [0.031, 0.012, 0.0125, 0.0121, 0.013]  # a prefill of 700 tokens beside 3 decodes, then 4 decodes of 5
    one_by_one, batched = BatchCosts(), BatchCosts()
    one_by_one.add(700, 3, times[0])
    for t in times[1:]:
        one_by_one.add(0, 5, t)
    one_by_one.add(0, 9, 0.02)
    batched.add(700, 3, times[0], 4, 5, sum(times[1:]))
    batched.add(0, 9, 0.02)
    assert batched.fit() == pytest.approx(one_by_one.fit(), rel=1e-12)
    decode_run = BatchCosts()  # decode-only, every iteration alike: the whole time may come as one figure
    decode_run.add(0, 5, sum(times[1:]), 3, 5, 0.0)
    decode_run.add(700, 3, times[0])
    decode_run.add(0, 9, 0.02)
    assert decode_run.fit() == pytest.approx(one_by_one.fit(), rel=1e-12)


def test_a_negative_coefficient_is_left_out_and_no_batch_gives_none():
    assert BatchCosts().fit() is None
    costs = BatchCosts()
    for p, d in ((100, 0), (200, 0), (0, 10), (50, 20)):
        costs.add(p, d, 0.5 - 0.001 * p + 0.01 * d if p else 0.5 + 0.01 * d)  # "prefill makes batches faster"
    a, b, c = costs.fit()
    assert b == 0.0 and a >= 0 and c >= 0


def test_the_iterations_a_running_batch_finished_before_the_fit_began_are_left_out_once():
    costs = BatchCosts()
    costs.exclude("w0", 7, 3, 0.05)
    assert costs.excluded("w0", 6) == (0, 0.0)  # another batch: nothing (and the mark is gone)
    assert costs.excluded("w0", 7) == (0, 0.0)
    costs.exclude("w0", 7, 3, 0.05)
    assert costs.excluded("w1", 7) == (0, 0.0)
    assert costs.excluded("w0", 7) == (3, 0.05)
    assert costs.excluded("w0", 7) == (0, 0.0)
