"""benchmarks/fidelity_lib/diagnose.py: where each request's time went, the batches and the queue over time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity_lib.diagnose import batch_summary, occupancy, phases  # noqa: E402
from fidelity_lib.host_cpu import CpuSampler, contention, cpu_per_window  # noqa: E402


def _req(arrival, scheduled, first, finish, status="completed"):
    return {"arrival": arrival, "scheduled": scheduled, "first": first, "finish": finish, "prompt": 10, "output": 4,
            "status": status}


def test_phases_split_a_request_into_queued_prefill_and_decode():
    p = phases(_req(1.0, 1.5, 1.75, 3.0))
    assert p == pytest.approx({"queued": 0.5, "prefill": 0.25, "decode": 1.25, "ttft": 0.75, "e2e": 2.0})
    assert phases(_req(1.0, 1.5, None, None, "failed")) is None


def test_occupancy_counts_waiting_and_running_requests():
    reqs = {"a": _req(0.0, 0.0, 0.1, 2.5), "b": _req(0.5, 1.5, 1.6, 1.8), "c": _req(1.2, None, None, None, "failed")}
    assert occupancy(reqs, 1.0, 3.0) == [(0.0, 0, 1), (1.0, 1, 1), (2.0, 1, 1)]


def test_batch_summary_counts_decode_iterations_after_a_prefill():
    batches = [{"t": 0.0, "prefill": 2, "prefill_tokens": 30, "decode": 0, "iterations": 3},
               {"t": 0.1, "prefill": 0, "prefill_tokens": 0, "decode": 2, "iterations": 4}]
    s = batch_summary(batches)
    assert (s["prefills"], s["prompts_per_prefill"], s["decode_batches"], s["decode_iterations"]) == (1, 2.0, 1, 6)


def test_cpu_sampler_attributes_this_process_and_aligns_to_the_run_clock():
    cpu = CpuSampler(period_s=0.02).start()
    x = 0
    while len(cpu.rows) < 6:
        x += 1  # busy: this process's CPU
    cpu.stop()
    w0 = cpu.rows[0][0]
    per = cpu.per_second((w0, 10.0), 10.0)  # perf_counter w0 is run time 10 s; rebased to t0 = 10 s
    assert per and per[0][0] == pytest.approx(0.0, abs=1e-9)
    assert max(d for _, d, _, _ in per) > 0.3  # the loop above kept this process busy
    windows = cpu_per_window(per, 1.0)
    assert windows[0][0] == 0.0 and 0.0 <= windows[0][2] <= 1.0


def test_contention_reads_the_worker_descheduled_and_the_other_jobs():
    cpu = CpuSampler()
    # (perf_counter, this process, children, whole machine busy): 1 s apart; the worker got 0.6 of a core
    # in a second whose iterations wanted 1.2 s, other jobs took 1.3 cores
    cpu.rows = [(100.0, 0.0, 0.0, 0.0), (101.0, 0.1, 0.6, 2.0), (102.0, 0.2, 1.5, 3.0)]
    got = contention(cpu, (100.0, 5.0), 5.0, {0: 1.2, 1: 0.9})
    assert got["others_cores_max"] == pytest.approx(1.3) and got["others_cores_mean"] == pytest.approx(0.65)
    assert got["worker_cpu_per_backend"] == pytest.approx((0.6 + 0.9) / (1.2 + 0.9), abs=1e-3)
    assert contention(cpu, None, 0.0, {}) == {}
    assert contention(cpu, (100.0, 5.0), 5.0, {0: 1.2}, worker_is_child=False)["worker_cpu_per_backend"] is None


def test_a_scaled_profile_prices_every_iteration_that_much_dearer(tmp_path):
    from controlplane.hardware.profile_format import write_profile
    from fidelity_lib.attribution import scaled_profile
    from sim.latency.base import IterationShape
    from sim.latency.measured import MeasuredProfileModel

    rows = [{"num_prefill_tokens": p, "num_prefill_seqs": 1 if p else 0, "num_decode_seqs": n,
             "sum_decode_context": 100 * n, "sum_prefill_context": 0, "iteration_s": 0.002 + 1e-5 * p + 3e-4 * n}
            for p, n in ((0, 1), (0, 4), (0, 16), (64, 0), (256, 0))]
    base = write_profile(tmp_path / "p.json", rows, {"model": "m", "device": "cpu", "source": "test"})
    slower = scaled_profile(base, 1.02, tmp_path / "s.json")
    a, b = MeasuredProfileModel.from_file(base), MeasuredProfileModel.from_file(slower)
    for shape in (IterationShape((), (), [100] * 4), IterationShape((128,), (0,), ())):
        assert b.iteration_s(shape) == pytest.approx(1.02 * a.iteration_s(shape), rel=1e-6)


def test_the_per_iteration_error_is_split_by_kind_and_batch_size(tmp_path):
    from controlplane.hardware.profile_format import write_profile
    from controlplane.live.iteration_samples import IterationSample
    from fidelity_lib.attribution import iteration_error_by_shape, iteration_error_pct
    from sim.calibration import predict_row
    from sim.latency.measured import MeasuredProfileModel

    def row(p, n, d, t):
        return {"num_prefill_tokens": p * n, "num_prefill_seqs": n, "num_decode_seqs": d,
                "sum_decode_context": 100 * d, "sum_prefill_context": 0, "iteration_s": t}

    rows = [row(p, n, d, 0.002 + 1e-5 * p * n + 3e-4 * d) for p, n, d in
            ((0, 0, 1), (0, 0, 4), (0, 0, 16), (64, 1, 0), (256, 1, 0), (64, 4, 0))]
    path = write_profile(tmp_path / "p.json", rows, {"model": "m", "device": "cpu", "source": "test"})
    model = MeasuredProfileModel.from_file(path)
    # the live run: small decodes at the profile's price, big prefills at twice it
    shapes = [(0, 0, 2)] * 10 + [(64, 12, 0)] * 3 + [(64, 1, 0)] * 4
    samples, t = [], 0.0
    for k, (p, n, d) in enumerate(shapes):
        price = predict_row(model, row(p, n, d, 0.0))
        took = price * (2.0 if n >= 8 else 1.0)
        samples.append(IterationSample("w", k, t, t + took, row(p, n, d, took)))
        t += took + 0.5  # far apart: no hand-off added
    got = iteration_error_by_shape(path, samples)
    assert list(got) == ["prefill 1", "prefill 8-15", "decode 1-7"]
    assert got["prefill 8-15"]["iterations"] == 3 and got["prefill 8-15"]["err_pct"] == pytest.approx(-50, abs=1)
    assert abs(got["decode 1-7"]["err_pct"]) < 1 and abs(got["prefill 1"]["err_pct"]) < 1
    assert sum(v["time_share_pct"] for v in got.values()) == pytest.approx(100, abs=0.2)
    assert iteration_error_pct(path, samples) < -20  # the pooled figure hides where it sits
