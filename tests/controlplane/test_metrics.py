"""Per-request latencies and the run summary."""

from __future__ import annotations

import pytest

from controlplane.config import SLOConfig
from controlplane.metrics import MAX_REASONS, OTHER_REASONS, RunStats, request_latencies
from controlplane.types import Request, RequestStatus


def _done(rid: str, arrival: float, scheduled: float, first: float, finish: float, out: int) -> Request:
    r = Request(rid, arrival, 100, out, status=RequestStatus.COMPLETED)
    r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens = scheduled, first, finish, out
    return r


def test_request_latencies():
    r = _done("a", 1.0, 1.5, 2.0, 4.0, 5)
    assert request_latencies(r) == (1.0, 0.5, 3.0, 0.5)  # ttft, tpot, e2e, queue
    one = _done("b", 0.0, 0.0, 0.2, 0.2, 1)
    assert request_latencies(one) == (0.2, None, 0.2, 0.0), "one output token: no gap, TPOT undefined"
    assert request_latencies(Request("c", 0.0, 1, 1)) == (None, None, None, None)
    rejected = Request("d", 1.0, 1, 1, status=RequestStatus.REJECTED)
    rejected.finish_s = 1.25
    assert request_latencies(rejected) == (None, None, 0.25, None), "never scheduled: no queue time"


def test_one_token_outputs_meet_any_tpot_target_and_stay_out_of_tpot_percentiles():
    stats = RunStats()
    slo = SLOConfig(ttft_s=1.0, tpot_s=0.01)
    one = _done("one", 0.0, 0.0, 0.5, 0.5, 1)
    slow = _done("slow", 0.0, 0.0, 0.5, 2.5, 3)  # tpot 1.0: misses
    for r in (one, slow):
        stats.on_arrival(r)
        stats.on_finished(r, slo)
    s = stats.summary(3.0)
    assert s["tpot_p50_s"] == pytest.approx(1.0) and s["tpot_mean_s"] == pytest.approx(1.0)
    assert s["ttft_p50_s"] == pytest.approx(0.5)
    assert s["slo_attainment"] == pytest.approx(1 / 2)


def test_only_one_token_outputs_have_no_tpot():
    stats = RunStats()
    r = _done("one", 0.0, 0.0, 0.5, 0.5, 1)
    stats.on_arrival(r)
    stats.on_finished(r, SLOConfig())
    s = stats.summary(1.0)
    assert s["tpot_p50_s"] is None and s["ttft_p50_s"] == pytest.approx(0.5)
    assert s["slo_attainment"] == 1.0


def test_summary_counts_outcomes_slo_and_percentiles():
    stats = RunStats()
    slo = SLOConfig(ttft_s=1.5, tpot_s=0.6)
    fast = _done("fast", 0.0, 0.0, 1.0, 2.0, 3)  # ttft 1.0, tpot 0.5: meets the SLO
    slow = _done("slow", 0.0, 0.5, 2.0, 4.0, 3)  # ttft 2.0: misses it
    rejected = Request("rej", 1.0, 10, 1, status=RequestStatus.REJECTED, reason="queue full: 3 waiting")
    cut = Request("cut", 3.0, 10, 1, status=RequestStatus.IN_FLIGHT)
    for r in (fast, slow, rejected, cut):
        stats.on_arrival(r)
    for r in (fast, slow, rejected, cut):
        stats.on_finished(r, slo)
    s = stats.summary(4.0)
    assert (s["num_requests"], s["num_completed"], s["num_rejected"], s["num_failed"], s["num_in_flight"]) == (4, 2, 1, 0, 1)
    assert s["reject_reasons"] == {"queue full": 1}
    assert s["ttft_p50_s"] == pytest.approx(1.5) and s["ttft_mean_s"] == pytest.approx(1.5)
    assert s["e2e_p99_s"] == pytest.approx(3.98)
    assert s["slo_attainment"] == pytest.approx(1 / 4)  # of all arrivals
    assert s["throughput_rps"] == pytest.approx(2 / 4.0)
    assert s["output_tokens"] == 6 and s["prompt_tokens"] == 200


def test_an_empty_run_has_no_percentiles():
    s = RunStats().summary(0.0)
    assert s["num_requests"] == 0 and s["ttft_p50_s"] is None and s["throughput_rps"] is None


def _hit(rid: str, tokens_out: int) -> Request:
    r = _done(rid, 0.0, 0.0, 0.01, 0.01, tokens_out)
    r.cache_hit = "exact"
    return r


def test_cache_saving_prices_the_hits_at_the_costs_fitted_to_the_batches_not_at_held_gpu_time():
    stats = RunStats()
    slo = SLOConfig(ttft_s=1.5, tpot_s=0.6)
    for r in (_done("a", 0.0, 0.0, 1.0, 2.0, 100), _hit("b", 10), _hit("c", 10)):
        stats.on_arrival(r)
        stats.on_finished(r, slo)
    stats.gpu_seconds = 10_000.0  # replicas held, mostly idle
    for p, d in ((512, 0), (0, 8), (100, 5), (64, 40)):  # iterations: prefilled and decoded tokens
        stats.batch_costs.add(p, d, 0.01 + 0.0001 * p + 0.001 * d)
    stats.batch_costs.add(0, 8, 0.018, 3, 8, 3 * 0.018)  # a batch of 4 decode iterations
    stats.busy_gpu_seconds = 3.0
    s = stats.summary(2.0)
    assert s["gpu_busy_seconds"] == 3.0 and s["gpu_seconds"] == 10_000.0
    # two hits of 100 prompt and 10 output tokens: batched 200 x 0.0001 + 20 x 0.001; alone + 20 x 0.01
    assert s["cache_gpu_seconds_saved"] == pytest.approx(0.04)
    assert s["cache_gpu_seconds_saved_upper"] == pytest.approx(0.24)


def test_cache_saving_is_zero_without_hits_and_null_without_a_computed_token():
    slo = SLOConfig(ttft_s=1.5, tpot_s=0.6)
    assert RunStats().summary(0.0)["cache_gpu_seconds_saved"] is None  # nothing computed, nothing hit
    plain = RunStats()
    plain.on_arrival(r := _done("a", 0.0, 0.0, 1.0, 2.0, 10))
    plain.on_finished(r, slo)
    assert plain.batch_costs is None  # no hit: no batch is fitted (the simulator's hot path pays nothing)
    assert plain.summary(2.0)["cache_gpu_seconds_saved"] == 0.0
    only_hits = RunStats()
    only_hits.on_arrival(h := _hit("b", 10))
    only_hits.on_finished(h, slo)
    assert only_hits.summary(2.0)["cache_gpu_seconds_saved"] is None  # no cost per token was measured


def test_reasons_past_the_cap_are_counted_together_so_memory_does_not_grow():
    """A policy that puts a number in every reason (no ':' to cut at) would keep a key per request."""
    stats = RunStats()
    for i in range(MAX_REASONS + 50):
        r = Request(f"r{i}", 0.0, 10, 1, status=RequestStatus.REJECTED, reason=f"prompt {i} tokens over the limit")
        stats.on_arrival(r)
        stats.on_finished(r, SLOConfig())
    late = Request("late", 0.0, 10, 1, status=RequestStatus.REJECTED, reason="prompt 3 tokens over the limit: again")
    stats.on_finished(late, SLOConfig())  # a reason already counted keeps its own key
    reasons = stats.summary(1.0)["reject_reasons"]
    assert len(reasons) == MAX_REASONS + 1 and reasons[OTHER_REASONS] == 50
    assert reasons["prompt 3 tokens over the limit"] == 2 and sum(reasons.values()) == MAX_REASONS + 51


def test_the_peak_replica_count_is_the_most_spans_alive_at_once():
    from controlplane.metrics import peak_overlap

    assert peak_overlap([]) == 0
    assert peak_overlap([(0.0, 10.0), (0.0, 5.0), (5.0, 8.0)]) == 2  # one ends as another starts: not both
    assert peak_overlap([(0.0, 10.0), (1.0, 9.0), (2.0, 3.0), (9.5, 12.0)]) == 3


def test_cache_saving_is_null_when_every_computed_batch_finished_before_the_first_hit():
    """20 identical prompts 5 s apart: the one computed request finished before the first hit, where the batch-cost
    fit begins, so no cost was measured and both estimates are null (as docs/caching.md says), not 0."""
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(f"r{i}", 5.0 * i, 50, 10, prompt="same") for i in range(20)]
    s = replay_with(trace=trace).summary
    assert s["cache_hit_rate"] == 0.95 and s["gpu_busy_seconds"] > 0
    assert s["cache_gpu_seconds_saved"] is None and s["cache_gpu_seconds_saved_upper"] is None
