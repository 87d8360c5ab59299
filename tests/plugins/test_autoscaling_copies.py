"""`slo-planner`'s `shape_copies`: a replicated request's copies counted once in the request shape
(plugins/autoscaling_copies.py); off ("each") by default and then changing nothing."""

from __future__ import annotations

import dataclasses
import functools

from controlplane.testing import make_trace
from plugins.autoscaling_copies import RecentShapes
from sim.traces import TraceRequest
from tests.fixtures.common import planner_replay


def test_a_pair_is_seen_again_only_within_the_window():
    seen = RecentShapes(60.0)
    assert not seen.seen(0.0, 100, 10)
    assert seen.seen(30.0, 100, 10)  # a copy
    assert not seen.seen(31.0, 100, 11)  # another output: another shape
    assert not seen.seen(95.0, 100, 10) and len(seen) == 1  # both older ones left the window; this one stays
    assert seen.seen(155.0, 100, 10)


def _trace():
    """Prompts of 200-312 tokens at 12 req/s for 120 s, and at 40 s twelve copies of one request
    with a 4,096-token prompt within half a second (as `--rate-scale 12` emits one request)."""
    base = [dataclasses.replace(r, prompt_tokens=200 + (i * 37) % 113)
            for i, r in enumerate(make_trace(1440, qps=12.0, prompt_tokens=256, output_tokens=128, seed=5))]
    copies = [TraceRequest(f"c{i}", 40.0 + 0.04 * i, 4096, 64) for i in range(12)]
    return sorted([*base, *copies], key=lambda r: r.arrival_s)


@functools.cache
def _replay(**settings):
    return planner_replay(_trace(), **settings)


def _prompts(res, after: float) -> list[float]:
    return [d.payload["signals"]["prompt_tokens"] for d in res.decisions
            if d.plugin == "slo-planner" and d.time_s >= after]


def test_off_by_default_and_off_changes_nothing():
    base, each = _replay(), _replay(shape_copies="each")
    assert [(d.time_s, d.reason) for d in base.decisions] == [(d.time_s, d.reason) for d in each.decisions]


def test_once_the_copies_move_the_mean_prompt_as_one_request():
    each, once = _replay(), _replay(shape_copies="once")
    # each: twelve finishes of 4,096 tokens, each weighing 0.02 of the EWMA, raise the mean prompt 4x and the count
    assert max(_prompts(each, 40.0)) > 900
    # once: one of them moves it (~0.02 x 3,850 above the short prompts' mean), and no replica is started for it
    assert max(_prompts(once, 0.0)) < 400
    peak = lambda res: max(d.payload["to"] for d in res.decisions if d.plugin == "slo-planner")  # noqa: E731
    assert peak(once) < peak(each)
