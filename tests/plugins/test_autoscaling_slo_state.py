"""The SLO planner's per-model state: its iteration estimate's answers, remembered (`RememberedEstimate`)."""

from __future__ import annotations

from plugins.autoscaling_forecast import replica_capacity
from plugins.autoscaling_slo_state import RememberedEstimate


def _counting():
    asked: list[tuple[int, int, int]] = []

    def estimate(prefill: int, seqs: int, context: int) -> float:
        asked.append((prefill, seqs, context))
        return 0.004 + 1e-5 * prefill + 2e-4 * seqs + 1e-7 * seqs * context

    return estimate, asked


def test_each_batch_is_asked_once_and_the_capacity_is_the_estimates_own():
    estimate, asked = _counting()
    remembered = RememberedEstimate()
    kw = dict(prompt_tokens=700.0, output_tokens=230.0, tpot_s=0.078, ttft_s=1.0, max_num_seqs=128,
              kv_tokens=None, chunk_tokens=512)
    plain = replica_capacity(estimate, **kw)
    first = len(asked)
    assert replica_capacity(remembered.bound(estimate), **kw) == plain
    assert len(asked) - first == len(set(asked[:first]))  # each batch asked once more: a new memory
    again = len(asked)
    assert replica_capacity(remembered.bound(estimate), **kw) == plain and len(asked) == again  # all remembered


def test_another_estimate_forgets_and_a_full_memory_starts_over():
    one, asked_one = _counting()
    two, asked_two = _counting()
    remembered = RememberedEstimate(limit=3)
    ask = remembered.bound(one)
    for args in ((1, 1, 1), (2, 1, 1), (1, 1, 1)):
        ask(*args)
    assert asked_one == [(1, 1, 1), (2, 1, 1)]
    remembered.bound(two)(1, 1, 1)  # another estimate bound: asked afresh
    assert asked_two == [(1, 1, 1)]
    ask = remembered.bound(two)
    for args in ((2, 1, 1), (3, 1, 1), (4, 1, 1), (1, 1, 1)):  # the fourth fills the memory: it starts over
        ask(*args)
    assert asked_two == [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 1), (1, 1, 1)]
