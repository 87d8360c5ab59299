"""A run summary's ``cost_per_1k_requests_usd`` is per 1,000 requests completed: the requests refused bought
nothing (it divided by every arrival, so a run that refused half its requests looked half as expensive per
request, and one that served none had a finite cost per 1,000)."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.testing import make_trace, replay_with

CLUSTER = {"models": [{"name": "default", "replicas": 1, "gpu": "l4", "num_kv_blocks": 1000}]}


def _trace(big: int, small: int):
    """``small`` requests that fit, then ``big`` whose prompts no replica's KV cache holds (refused)."""
    trace = make_trace(small + big, qps=1.0, prompt_tokens=500, output_tokens=50)
    return [r if i < small else dataclasses.replace(r, prompt_tokens=50_000) for i, r in enumerate(trace)]


def test_cost_per_1k_counts_completed_requests():
    s = replay_with(trace=_trace(big=10, small=10), cluster=CLUSTER).summary
    assert (s["num_requests"], s["num_completed"], s["num_rejected"]) == (20, 10, 10)
    assert s["cost_per_1k_requests_usd"] == pytest.approx(s["cost_usd"] * 1000 / 10, rel=1e-6)


def test_a_run_that_completed_nothing_has_no_cost_per_1k():
    s = replay_with(trace=_trace(big=5, small=0), cluster=CLUSTER).summary
    assert s["num_completed"] == 0 and s["cost_usd"] > 0
    assert s["cost_per_1k_requests_usd"] is None
