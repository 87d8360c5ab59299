"""`slo-planner`'s `arrival_prompt_smoothing`: the shape's mean prompt from the arriving requests' prompts (known
at arrival), not the finished ones'; off by default and then changing nothing."""

from __future__ import annotations

import functools

from controlplane.testing import make_trace
from tests.fixtures.common import planner_replay, with_burst


def _trace():
    """256-token prompts at 2 req/s to ~70 s, and 200 prompts of 4,096 tokens at 20 req/s from 60 s; then nothing."""
    return with_burst(make_trace(120, qps=2.0, prompt_tokens=256, output_tokens=64, seed=3),
                      make_trace(200, qps=20.0, prompt_tokens=4096, output_tokens=256, seed=11), 60.0)


@functools.cache
def _replay(**settings):
    return planner_replay(_trace(), **settings)


def _planner(res):
    return [d for d in res.decisions if d.plugin == "slo-planner"]


def test_off_by_default_and_off_changes_nothing():
    base, off = _replay(), _replay(arrival_prompt_smoothing=None)
    assert [(d.time_s, d.reason) for d in _planner(base)] == [(d.time_s, d.reason) for d in _planner(off)]
    assert ({k: v for k, v in base.summary.items() if k != "wall_s"}
            == {k: v for k, v in off.summary.items() if k != "wall_s"})


def test_on_a_burst_of_long_prompts_counts_as_it_arrives_and_the_prompt_stays_once_nothing_arrives():
    off, on = _planner(_replay()), _planner(_replay(arrival_prompt_smoothing=0.02))
    last = max(r.arrival_s for r in _trace())
    first_off = next(d for d in off if d.time_s >= 60.0)
    first_on = next(d for d in on if d.time_s >= 60.0)
    # off: the first scale-up after the burst began still prices the short prompts that finished
    assert first_off.payload["signals"]["prompt_tokens"] < 400
    # on: the long prompts count at arrival, before any finished, and the scale-up comes sooner and larger
    assert first_on.time_s < first_off.time_s
    assert first_on.payload["signals"]["prompt_tokens"] > 1000
    assert max(d.payload["to"] for d in on if d.time_s < first_off.time_s) > first_off.payload["to"]
    # once nothing arrives, the burst's finishers do not move the prompt (off: the finishers move it)
    after = {d.payload["signals"]["prompt_tokens"] for d in on if d.time_s > last + 1}
    assert len(after) <= 1
    assert len({d.payload["signals"]["prompt_tokens"] for d in off if d.time_s > last + 1}) > 1
