"""Fidelity and speed of the simulator against Vidur's recorded runs, on small slices.

The anchors (../shared/anchors/vidur) hold four Vidur runs: workload and per-request
predictions. benchmarks/vs_vidur.py compares whole runs; these tests check slices quickly:
the fast mode equals the exact mode, the event count does not grow with output length, and
our per-request timings track Vidur's.
"""

from __future__ import annotations

import importlib.util
import math
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controlplane.events import RequestFinished
from controlplane.hookspecs import hookimpl
from controlplane.session import RunSession
from controlplane.testing import make_trace, replay_with
from plugins.batching import kv_horizon
from controlplane.hardware.memory_plan import deployment_cold_start_s
from sim.driver import SimDriver, SteppedDecode
from sim.latency.base import IterationShape
from sim.replay import build_latency_models
from sim.traces import TraceRequest, read_trace

ROOT = Path(__file__).resolve().parents[2]
ANCHORS = ROOT.parent / "shared" / "anchors" / "vidur"
_spec = importlib.util.spec_from_file_location("vs_vidur", ROOT / "benchmarks" / "vs_vidur.py")
vs_vidur = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs_vidur)


def _anchor(run: str) -> Path:
    d = ANCHORS / run
    if not (d / "workload.csv").exists():
        pytest.skip(f"no Vidur anchor at {d}")
    return d


class _Timings:
    name = "timings"

    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}

    @hookimpl
    def cp_on_event(self, event):
        if type(event) is RequestFinished:
            r = event.request
            self.rows[r.request_id] = (r.arrival_s, r.first_token_s, r.finish_s, r.output_tokens, r.recompute_tokens,
                                       r.num_preemptions)


def _run(run_dir: Path, n: int, *, exact: bool = False):
    cfg = vs_vidur.run_config(run_dir, exact=exact, record_batches=True)
    obs = _Timings()
    with RunSession(cfg, mode="sim", record=False, extra_plugins=[obs]) as session:
        driver = SimDriver(session.core, build_latency_models(session),
                           cold_start_s={d.name: deployment_cold_start_s(d) for d in cfg.cluster.models})
        summary = session.close(driver.run(islice(read_trace(run_dir / "workload.csv", "canonical"), n)))
    return summary, obs.rows, driver


# --- the configuration the benchmark reads from vidur_config.json -----------------------------


def test_the_anchor_configuration_maps_to_ours():
    cfg = vs_vidur.run_config(_anchor("arxiv_r4_n10000_qps1.6"))
    d = cfg.cluster.models[0]
    assert (d.replicas, d.gpus_per_replica, d.max_num_seqs, d.max_batch_tokens, d.kv_block_size) == (4, 2, 128, 4096, 16)
    assert d.num_kv_blocks is None  # from the memory plan, not by hand
    assert cfg.plugins.enabled[0] == "round-robin"
    assert cfg.plugins.settings["continuous-batching"] == {"policy": "vllm", "watermark": 0.01}


# --- fast mode == exact mode on the anchors' workloads ----------------------------------------


@pytest.mark.parametrize("run, n", [("code_r1_n10000_qps0.8", 600), ("arxiv_r4_n10000_qps1.6", 400)])
def test_fast_and_exact_modes_agree_on_anchor_workloads(run, n):
    run_dir = _anchor(run)
    fast_summary, fast, fast_driver = _run(run_dir, n)
    exact_summary, exact, exact_driver = _run(run_dir, n, exact=True)
    assert fast_summary["num_completed"] == exact_summary["num_completed"] == n
    assert fast_summary["num_preemptions"] == exact_summary["num_preemptions"]
    ids = sorted(fast)
    assert ids == sorted(exact)
    f = np.array([fast[i][:3] for i in ids])
    e = np.array([exact[i][:3] for i in ids])
    np.testing.assert_allclose(f, e, rtol=1e-9)
    for col in (1, 2):  # TTFT and E2E percentiles within 1% (in fact equal to ~1e-12)
        for p in (50, 90, 99):
            a, b = np.percentile(f[:, col] - f[:, 0], p), np.percentile(e[:, col] - e[:, 0], p)
            assert abs(a / b - 1) < 0.01
    # The point of the fast mode: far fewer events for the same answer.
    assert fast_driver.num_events * 3 < exact_driver.num_events


def test_stepped_decode_prices_every_iteration_like_the_vidur_model():
    from sim.latency.vidur_profile import VidurProfileModel

    model = VidurProfileModel(network="a100_pairwise_nvlink")
    stepped = SteppedDecode.for_model(model)
    assert stepped is not None and stepped.granularity == 64
    rng = np.random.default_rng(3)
    for _ in range(40):
        b = int(rng.integers(1, 140))
        ctx = rng.integers(1, 4200, size=b)
        k = int(rng.integers(1, 300))
        want = model.decode_run_s(ctx, k)
        got = np.concatenate([np.full(n, d) for n, d in stepped.steps(b, int(ctx.sum()), k)])
        # Equal up to the last bit numpy's vectorised loops may round differently (batch > 128).
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
        # ... and like iteration_s, which the exact mode calls for each iteration.
        j = int(rng.integers(0, k))
        assert got[j] == pytest.approx(model.iteration_s(IterationShape((), (), (ctx + j).tolist())), rel=1e-14)



def test_stepped_decode_prices_a_single_prefill_as_the_vidur_model_does():
    """`SteppedDecode.prefill_s` (the driver's price of a batch of one prefill and no decodes) is
    the model's own ``iteration_s`` of that shape, bit for bit, on and off the tabulated grid,
    asked once or again, and after it started over."""
    import sim.stepped_decode as sd
    from sim.latency.vidur_profile import VidurProfileModel

    model = VidurProfileModel(network="a100_pairwise_nvlink")
    stepped = SteppedDecode.for_model(model)
    rng = np.random.default_rng(5)
    pairs = [(int(rng.integers(1, 9000)), int(rng.choice([0, 0, int(rng.integers(1, 5000))]))) for _ in range(300)]
    pairs += [(1, 0), (4096, 0), (20000, 0), (3, 100_000)]
    for _ in range(2):
        for n, c in pairs:
            assert stepped.prefill_s(n, c) == model.iteration_s(IterationShape([n], [c], []))
    old = sd._MAX_PREFILLS
    sd._MAX_PREFILLS = 10
    stepped = SteppedDecode.for_model(model)
    try:
        for n, c in pairs[:30]:
            assert stepped.prefill_s(n, c) == model.iteration_s(IterationShape([n], [c], []))
        assert len(stepped._prefills) <= 10
    finally:
        sd._MAX_PREFILLS = old

def test_kv_horizon_is_the_first_iteration_that_would_not_fit():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n, bs = int(rng.integers(1, 10)), int(rng.choice([1, 3, 16]))
        ctx = rng.integers(0, 90, n)
        need0 = int(((ctx + bs - 1) // bs).sum())
        blocks, cap = need0 + int(rng.integers(0, 25)), int(rng.integers(1, 150))
        j = 0
        while j < cap and int(((ctx + j + bs - 1) // bs).sum()) <= blocks:
            j += 1
        assert kv_horizon(ctx.tolist(), bs, blocks, cap) == j


# --- events do not grow with output length ----------------------------------------------------


def test_events_per_request_do_not_grow_with_output_tokens():
    per_request = {}
    for exact in (False, True):
        for out in (32, 512):
            trace = make_trace(60, qps=1.0, prompt_tokens=256, seed=5)
            trace = [TraceRequest(t.request_id, t.arrival_s, t.prompt_tokens, out) for t in trace]  # exact lengths
            res = replay_with(trace=trace, cluster={"models": [{"name": "default", "replicas": 2}]},
                              sim={"tick_s": 1e6, "exact": exact})
            assert res.summary["num_completed"] == 60
            per_request[exact, out] = sum(1 for d in res.decisions if d.action == "batch") / 60
    # 16x the tokens: the exact mode does ~16x the core round trips; the fast mode stays at a
    # few batches per request (a prefill that goes on decoding, then one more run per arrival
    # or finish of a neighbour), whatever the output length.
    assert per_request[True, 512] > 8 * per_request[True, 32]
    assert per_request[False, 32] <= 1.5 and per_request[False, 512] <= 2.5
    assert per_request[True, 512] > 20 * per_request[False, 512]


# --- fidelity on slices of Vidur's runs -------------------------------------------------------


@pytest.mark.parametrize("run, n", [("code_r1_n10000_qps0.8", 1500), ("arxiv_r1_n10000_qps0.4", 800)])
def test_per_request_timings_track_vidurs_on_a_slice(run, n):
    run_dir = _anchor(run)
    _, rows, _ = _run(run_dir, n)
    ids, ours = vs_vidur.latencies(rows)
    vidur = pd.read_csv(run_dir / "vidur_request_metrics.csv").set_index("request_id").loc[[int(i) for i in ids]]
    # Later arrivals share batches with the slice's last requests, so compare the first 80%.
    k = int(0.8 * len(ids))
    pairs = {"ttft": (ours["ttft"], vidur["ttft_s"]), "e2e": (ours["e2e"], vidur["e2e_s"]),
             "tpot_vidur": (ours["tpot_vidur"], vidur["tpot_s"])}
    for name, (a, b) in pairs.items():
        a, b = np.asarray(a)[:k], np.asarray(b)[:k]
        assert np.corrcoef(a, b)[0, 1] > 0.99, name
        for p in (50, 90):
            assert abs(np.percentile(a, p) / np.percentile(b, p) - 1) < 0.02, (name, p)


def test_tpot_definitions_ours_excludes_the_prefills_token_vidurs_does_not():
    # One request: prefill at 1 s, then 4 decodes of 1 s: 5 output tokens, 4 gaps.
    rows = {"0": (0.0, 1.0, 5.0, 5, 0, 0)}
    _, lat = vs_vidur.latencies(rows)
    assert lat["tpot"][0] == 1.0  # (finish - first token) / (output - 1)
    assert lat["tpot_vidur"][0] == 0.8  # Vidur: / num_decode_tokens, which counts the prefill's token
    restarted = {"0": (0.0, 1.0, 5.0, 5, 2, 1)}  # restarted after 2 tokens: Vidur divides by the 3 left
    assert vs_vidur.latencies(restarted)[1]["tpot_vidur"][0] == pytest.approx(4.0 / 3)


# --- the fidelity benchmark's capacity check, on the simulator alone --------------------------------


def test_the_capacity_sweep_finds_where_a_simulated_worker_leaves_the_slo(tmp_path):
    """The estimator `benchmarks/fidelity.py` applies to both sides: on a simulated worker the sweep's
    interpolated crossing lands next to the capacity bisection finds, and an SLO metric that rises with load."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from controlplane.config import RunConfig
    from controlplane.hardware.profile_format import write_profile
    from fidelity_lib import capacity as cap
    from fidelity_lib.metrics import stats
    from fidelity_lib.replay import replay_sim, run_config
    from fidelity_lib.slices import at_rate

    rows = [{"num_prefill_tokens": p * s, "num_prefill_seqs": s, "num_decode_seqs": 0, "sum_decode_context": 0,
             "sum_prefill_context": 0, "iteration_s": 0.004 + 1e-4 * p * s} for p in (16, 64) for s in (1, 4)]
    rows += [{"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": b, "sum_decode_context": 64 * b,
              "sum_prefill_context": 0, "iteration_s": 0.002 + 0.001 * b} for b in (1, 2, 4, 8, 16, 32, 64)]
    profile = write_profile(tmp_path / "p.json", rows, {"model": "tiny-llama", "device": "cpu", "batching": "padded"})
    worker = {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 512, "seed": 0}
    cfg = run_config(RunConfig(), worker, f"sqlite:///{tmp_path / 'f.db'}", name="capacity", profile=profile)
    rng = np.random.default_rng(0)
    reqs = [TraceRequest(str(i), float(t), int(rng.integers(16, 64)), int(rng.integers(16, 48)))
            for i, t in enumerate(np.cumsum(rng.exponential(1.0, 300)))]

    def ttft_p90(rate):
        times, _ = replay_sim(cfg, at_rate(reqs, rate), record=False)
        return stats(times)["ttft"][90] if len(times) == len(reqs) else math.inf

    best = cap.bisect_capacity(ttft_p90, 0.5, low=1.0, high=8.0, steps=10)
    rates = [f * best for f in cap.SWEEP_FRACTIONS]
    values = [ttft_p90(r) for r in rates]
    assert values == sorted(values) and values[0] < 0.5 < values[-1]
    swept = cap.crossing_rate(rates, values, 0.5)
    assert swept.status == "within" and abs(swept.rate / best - 1) < 0.15


def test_the_sweeps_batch_log_counts_every_simulated_iteration_in_exact_mode(tmp_path):
    """`benchmarks/fidelity.py` compares the simulated batching with the live worker's per sweep point: in exact
    mode (one iteration a batch) the batch decisions it counts hold one sequence-iteration per output token."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from controlplane.config import RunConfig
    from controlplane.hardware.profile_format import write_profile
    from fidelity_lib.replay import replay_sim, run_config
    from fidelity_lib.saturation import BatchLog, sim_summary
    from fidelity_lib.slices import at_rate

    rows = [{"num_prefill_tokens": p * s, "num_prefill_seqs": s, "num_decode_seqs": 0, "sum_decode_context": 0,
             "sum_prefill_context": 0, "iteration_s": 0.004 + 1e-4 * p * s} for p in (16, 64) for s in (1, 4)]
    rows += [{"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": b, "sum_decode_context": 64 * b,
              "sum_prefill_context": 0, "iteration_s": 0.002 + 0.001 * b} for b in (1, 2, 4, 8, 16, 32)]
    profile = write_profile(tmp_path / "p.json", rows, {"model": "tiny-llama", "device": "cpu", "batching": "padded"})
    worker = {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 512, "seed": 0}
    cfg = run_config(RunConfig(), worker, f"sqlite:///{tmp_path / 'f.db'}", name="batches", profile=profile)
    exact = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"exact": True})})
    rng = np.random.default_rng(1)
    reqs = [TraceRequest(str(i), float(t), int(rng.integers(16, 64)), int(rng.integers(4, 24)))
            for i, t in enumerate(np.cumsum(rng.exponential(1.0, 120)))]
    log = BatchLog()
    times, _ = replay_sim(exact, at_rate(reqs, 8.0), record=False, observers=(log,))
    assert len(times) == len(reqs) and all(n == 1 for *_, n in log.batches)
    assert sum(p + d for _, p, d, _ in log.batches) == sum(t.output_tokens for t in times)
    got = sim_summary(log, times, len(reqs))
    assert got["iterations"] == len(log.batches) and got["completed"] == len(reqs) and got["not_completed"] == 0
    assert got["mean_batch_seqs"] > 1  # at 8/s requests overlap
    fast, _ = replay_sim(cfg, at_rate(reqs, 8.0), record=False)  # the fast mode the prediction uses agrees
    assert sorted(t.finish_s for t in fast) == pytest.approx(sorted(t.finish_s for t in times), rel=1e-6, abs=1e-6)


def test_the_benchmarks_deployment_runs_in_its_workers_precision_and_takes_a_profile_of_it(tmp_path):
    """A calibrated CPU profile says fp32 (the worker's auto): the deployment's dumped default fp16 was refused
    against it (a profile is of one precision); the deployment's precision is its worker's, as the daemon's is."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from controlplane.config import RunConfig, checked_config
    from controlplane.hardware.profile_format import write_profile
    from fidelity_lib.replay import run_config

    rows = [{"num_prefill_tokens": p, "num_prefill_seqs": 1, "num_decode_seqs": 0, "sum_decode_context": 0,
             "sum_prefill_context": 0, "iteration_s": 0.001 * p} for p in (16, 64)]
    rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": 2, "sum_decode_context": 40,
                 "sum_prefill_context": 0, "iteration_s": 0.004})
    profile = write_profile(tmp_path / "p.json", rows, {"model": "tiny-llama", "device": "cpu", "precision": "fp32"})
    worker = {"preset": "tiny-llama", "precision": "auto", "device": "cpu", "max_seq_len": 512, "seed": 0}
    cfg = run_config(RunConfig(), worker, "sqlite://", name="fp32", profile=profile)
    assert checked_config(cfg).cluster.models[0].precision == "auto"
    cfg = run_config(RunConfig(), {**worker, "precision": "fp32"}, "sqlite://", name="fp32", profile=profile)
    assert cfg.cluster.models[0].precision == "fp32"
