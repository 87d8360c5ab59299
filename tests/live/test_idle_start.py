"""The step a prefill costs when it starts on an idle worker (controlplane.live.idle_start), folded into a
profile by the calibration and added by the simulator's driver where its replica was idle."""

from __future__ import annotations

import pytest

from controlplane.live.idle_start import IDLE_GAP_S, idle_prefill_extra
from controlplane.live.iteration_samples import IterationSample
from tests.live.test_calibration import row


def _timeline(n_idle=12, n_busy=12, idle_path=0.0011, busy_path=0.0005, backend=0.008):
    """Prefills alone after 0.5 s idle (live path ``idle_path``), then back-to-back prefills (``busy_path``)
    right after a decode (so none of them starts the worker cold); prompt lengths vary (the fit needs rows)."""
    out, t = [], 0.0
    for k in range(n_idle):
        t += 0.5
        out.append(IterationSample("w-0", 0, t, t + backend + idle_path, row(p_tok=16 + k, p_seqs=1, t=backend), 0.0))
        t += backend + idle_path
    t += 0.5
    out.append(IterationSample("w-0", 0, t, t + 0.002, row(d_seqs=1, d_ctx=20, t=0.0015), 0.0))
    t += 0.002 + 0.0001
    for k in range(n_busy):
        out.append(IterationSample("w-0", 0, t, t + backend + busy_path, row(p_tok=16 + k, p_seqs=1, t=backend), 0.0))
        t += backend + busy_path + 0.0001
    return out


def test_the_step_is_the_idle_prefills_live_path_over_the_back_to_back_ones_and_taken_out_of_them():
    samples = _timeline()
    step, out = idle_prefill_extra(samples)
    assert step == pytest.approx(0.0006)
    prefills = [s for s in out if s.num_prefill_seqs]
    assert [s.effective_s - s.backend_s for s in prefills] == pytest.approx([0.0005] * 24)  # back-to-back costs now
    assert samples[0].effective_s - samples[0].backend_s == pytest.approx(0.0011)  # (the input is not changed)


def test_too_few_of_either_or_a_negative_step_measures_nothing():
    assert idle_prefill_extra(_timeline(n_idle=5))[0] == 0.0
    assert idle_prefill_extra(_timeline(n_busy=3))[0] == 0.0
    samples = _timeline(idle_path=0.0003)
    assert idle_prefill_extra(samples) == (0.0, samples)


def test_a_calibrated_profile_records_the_step_and_the_measured_model_reads_it(tmp_path):
    from sim.calibration import calibrate
    from sim.latency.measured import MeasuredProfileModel

    assert "idle_prefill_extra_s" not in calibrate(_timeline(), tmp_path / "off.json").meta  # (off by default)
    cal = calibrate(_timeline(), tmp_path / "p.json", idle_step=True)
    assert cal.meta["idle_prefill_extra_s"] == pytest.approx(0.0006) and cal.meta["idle_gap_s"] == IDLE_GAP_S
    model = MeasuredProfileModel.from_file(cal.path)
    assert model.idle_prefill_extra_s == pytest.approx(0.0006) and model.idle_gap_s == IDLE_GAP_S


def test_the_simulator_adds_the_step_to_a_prefill_on_an_idle_replica_only(tmp_path):
    """Two requests 0.05 s apart reach a replica back to back; a third, 5 s later, finds it idle."""
    from controlplane.testing import make_config
    from sim.latency.linear import LinearLatencyModel
    from sim.replay import replay
    from sim.traces import TraceRequest

    import sqlite3

    def ttfts(extra: float, db) -> dict[str, float]:
        model = LinearLatencyModel()
        model.idle_prefill_extra_s, model.idle_gap_s = extra, 0.1
        trace = [TraceRequest("a", 0.0, 64, 2), TraceRequest("b", 1e-6, 64, 2), TraceRequest("c", 5.0, 64, 2)]
        cfg = make_config(storage={"url": f"sqlite:///{db}"}, cluster={"models": [{"name": "default", "replicas": 1}]})
        from sim import replay as replay_module

        original = replay_module.build_latency_models
        replay_module.build_latency_models = lambda session: {"default": model}
        try:
            replay(trace, cfg)
        finally:
            replay_module.build_latency_models = original
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("select request_id, ttft_s from request"))

    base, with_step = ttfts(0.0, tmp_path / "a.db"), ttfts(0.05, tmp_path / "b.db")
    assert with_step["a"] == pytest.approx(base["a"] + 0.05)  # the run's first prefill: the replica was idle
    assert with_step["c"] == pytest.approx(base["c"] + 0.05)  # 5 s later: idle again
    assert with_step["b"] - base["b"] == pytest.approx(0.05)  # (it waited behind a's prefill, which took the step)
