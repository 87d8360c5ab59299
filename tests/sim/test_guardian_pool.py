"""Simulated guardian replicas: batches, queues, timeouts and what they cost."""

from __future__ import annotations

import pytest

from controlplane.testing import replay_with
from controlplane.types import RequestStatus
from sim.traces.record import TraceRequest


def _run(spec, n=3, **settings):
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(n)]
    return replay_with(trace=trace, plugins={"settings": {"sampled-guardian": {
        "rate": 1.0, "mode": "sync", "guardian": spec["name"], **settings}}}, guardians={"models": [spec]})


def test_a_check_past_its_timeout_answers_timeout_and_a_queued_one_never_runs():
    spec = {"name": "g", "replicas": 1, "timeout_s": 1.5, "latency": {"base_s": 1.0, "max_batch": 1}}
    res = _run(spec)
    verdicts = sorted(r.guardian_verdict for r in res.requests)
    assert verdicts == ["pass", "timeout", "timeout"]
    g = res.summary["guardians"]["g"]
    # the first check ran 0-1 s, the second 1-2 s (its verdict came too late), the third never ran
    assert g["checks"] == 3 and g["batches"] == 2 and g["timeouts"] == 2
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(2.0)
    assert all(r.status is RequestStatus.COMPLETED for r in res.requests)  # fail open (the default)


def test_a_batch_checks_several_at_once_priced_by_its_tokens():
    spec = {"name": "g", "replicas": 1, "gpus_per_replica": 2,
            "latency": {"base_s": 0.5, "per_token_s": 0.01, "max_batch": 8}}
    res = _run(spec, n=4)
    g = res.summary["guardians"]["g"]
    # one batch of 4 output checks, each 16 prompt + 1 answer token: 0.5 + 0.01 * 68 s, on 2 GPUs
    assert g["batches"] == 1
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(2 * (0.5 + 0.01 * 68))
    assert {round(r.finish_s - r.first_token_s, 6) for r in res.requests} == {round(0.5 + 0.68, 6)}


def test_an_input_check_prices_only_the_prompt():
    spec = {"name": "g", "latency": {"base_s": 0.0, "per_token_s": 0.01, "max_batch": 1}}
    res = _run(spec, n=1, stages=["input"])
    assert res.summary["guardian_gpu_seconds"] == pytest.approx(0.16)


def test_mean_wait_counts_the_checks_that_timed_out_in_the_queue_at_their_timeout():
    spec = {"name": "g", "replicas": 1, "timeout_s": 1.5, "latency": {"base_s": 1.0, "max_batch": 1}}
    g = _run(spec).summary["guardians"]["g"]
    # waits: about 0 s (ran at once), 1 s (ran when the first was done, too late), 1.5 s (never
    # ran: its timeout); the answers were asked a few ms apart, as their generations ended
    assert g["mean_wait_s"] == pytest.approx((0.0 + 1.0 + 1.5) / 3, abs=0.01)
