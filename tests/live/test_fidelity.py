"""benchmarks/fidelity.py: trace slicing and scaling, the comparison, and one tiny end-to-end run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.latency.linear import LinearLatencyModel
from sim.traces import TraceRequest, bundled_trace_path

ROOT = Path(__file__).resolve().parents[2]
MOONCAKE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl"
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F  # dataclasses look their module up while the file executes
_spec.loader.exec_module(F)


def _slices(path, fmt, **kw):
    args = dict(start_s=None, calibration=10, limit=30, prompt_scale="auto", output_scale="auto", prompt_p50=64,
                output_p50=16, max_prompt=256, max_output=48, seed=0)
    return F.load_slices(path, fmt, **{**args, **kw})


def test_the_bundled_azure_trace_is_scaled_to_a_tiny_model():
    s = _slices(bundled_trace_path(), "azure")
    assert len(s.calibration) == 10 and len(s.evaluation) == 30
    assert 0 < s.prompt_scale < 0.1 and s.output_scale == 1.0  # Azure code outputs are short already
    every = s.calibration + s.evaluation
    assert all(1 <= r.prompt_tokens <= 256 and 1 <= r.output_tokens <= 48 for r in every)
    assert s.calibration[0].arrival_s == 0 == s.evaluation[0].arrival_s  # each slice starts at 0
    assert [r.arrival_s for r in s.evaluation] == sorted(r.arrival_s for r in s.evaluation)
    cal, ev, after = s.at_speed(4.0)
    assert after == []  # no second calibration slice asked for
    assert ev[-1].arrival_s == pytest.approx(s.evaluation[-1].arrival_s / 4)
    assert [r.prompt_tokens for r in ev] == [r.prompt_tokens for r in s.evaluation]


def test_mooncake_long_contexts_are_scaled_and_lose_their_prefix_hashes():
    if not MOONCAKE.exists():
        pytest.skip("no Mooncake trace in ../shared")
    s = _slices(MOONCAKE, "mooncake", prompt_scale="0.01", max_output=32)
    assert s.prompt_scale == 0.01 and s.output_scale < 0.1
    assert all(r.hash_ids == () and r.output_tokens <= 32 for r in s.evaluation)


def test_auto_speed_up_compresses_towards_the_duration_but_keeps_the_busiest_window_servable():
    reqs = [TraceRequest(str(i), 10.0 * i, 64, 16) for i in range(11)]  # one every 10 s, 100 s span
    model = LinearLatencyModel(base_s=0.01, prefill_s_per_token=0.0, decode_s_per_seq=0.0,
                               decode_s_per_context_token=0.0)
    assert F.isolated_service_s(model, reqs[0]) == pytest.approx(0.16)
    assert F.auto_speed_up(model, reqs, utilization=0.9, duration_s=50) == pytest.approx(2.0)  # the duration binds
    # 2x faster puts two requests in some 10 s window: 0.032 of load; 0.02 allows only one.
    assert F.auto_speed_up(model, reqs, utilization=0.02, duration_s=50) <= 1.0
    # Nothing is light enough: slowed down, but the replay lasts at most 3 x the duration.
    assert F.auto_speed_up(model, reqs, utilization=0.001, duration_s=50) == pytest.approx(100 / 150)
    assert F.auto_speed_up(model, reqs[:1], utilization=0.5, duration_s=50) == 1.0
    burst = [TraceRequest(str(i), 0.1 * i, 64, 16) for i in range(100)]  # 10 req/s for 10 s
    speed = F.auto_speed_up(model, burst, utilization=0.5, duration_s=100)
    assert speed < 1 and F.peak_load(np.full(100, 0.16), np.array([r.arrival_s for r in burst]), speed) <= 0.5


def test_stats_and_signed_errors():
    live = [F.RequestTimes(str(i), 0.0, 0.1, 0.1 + 0.01 * 9, 10, "completed") for i in range(5)]
    sim = [F.RequestTimes(str(i), 0.0, 0.11, 0.11 + 0.009 * 9, 10, "completed") for i in range(5)]
    failed = F.RequestTimes("x", 0.0, None, None, 0, "failed")
    a, b = F.stats(live + [failed]), F.stats(sim)
    assert a["ttft"][50] == pytest.approx(0.1) and a["tpot"][50] == pytest.approx(0.01)
    err = F.errors(a, b)
    assert err["ttft"][50] == pytest.approx(10.0) and err["tpot"][50] == pytest.approx(-10.0)
    assert F.paired_abs_error(live, sim, "ttft") == pytest.approx(10.0)
    assert math.isnan(F.stats([failed])["e2e"][50])


def test_a_level_with_no_round_reads_n_a_not_nan(capsys):
    from fidelity_lib.protocol_report import _variant_line
    from rich.console import Console

    errors = {"ttft_p50": 1.25, "e2e_p50": -2.0, "ttft_p99": 3.0, "e2e_p99": 4.0, "low_ttft_p50": math.nan,
              "low_e2e_p50": math.nan, "high_ttft_p50": 1.25, "high_e2e_p50": -2.0}
    console = Console(width=400)
    _variant_line(console, errors, "the probe")
    line = capsys.readouterr().out
    assert "nan" not in line and "(low n/a / n/a, high +1.2% / -2.0%)" in line


# --max-pace-gap 0: every round pooled, so the run counts below do not hang on the machine's pace.
TINY = ["--protocol", "in-sample", "--limit", "12", "--duration", "3", "--repeats", "1", "--pool", "thread", "--rounds", "2",
        "--max-prompt-tokens", "32", "--max-output-tokens", "8", "--prompt-p50", "16", "--output-p50", "4",
        "--max-pace-gap", "0"]


def test_a_tiny_fidelity_run_end_to_end(tmp_path, capsys):
    result = F.main([*TINY, "--db", f"sqlite:///{tmp_path / 'f.db'}", "--profile-out", str(tmp_path / "p.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))
    assert result["completed"] == 2 * result["requests"] == 24  # two rounds, pooled
    assert result["rounds"] == result["rounds_run"] == 2 and result["steady"]
    assert len(result["round_p50_err_pct"]) == len(result["live_round_p50_spread_pct"]) == 2
    assert [r["pooled"] for r in result["round_pace"]] == [True, True]
    assert result["all_rounds_e2e_p50_err_pct"] == result["e2e_p50_err_pct"]
    for key in ("ttft_p50_err_pct", "e2e_p50_err_pct", "tpot_p50_err_pct", "insample_e2e_p50_err_pct"):
        assert math.isfinite(result[key])
    assert result["target_met"] == (abs(result["ttft_p50_err_pct"]) <= 10 and abs(result["e2e_p50_err_pct"]) <= 10)
    # Calibrated on rehearsals of the evaluated slice: before the evaluated run, then after it.
    assert result["calibrated_on"] == "slice" and result["calibration_requests"] == [12, 12]
    assert [r["kind"] for r in result["backend_slowdown_by_run"]] == ["calibration", "evaluated", "evaluated",
                                                                      "calibration"]
    assert result["machine_drift"] > 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["batching"] == "padded" and doc["live_slowdown"] > 0 and doc["overhead_samples"] > 0
    runs = result["runs"]  # all recorded in --db
    assert max(runs["calibration"] + runs["live"]) < min(runs["sim"]) and len(runs["sim"]) == 2


def test_calibrating_on_the_neighbouring_requests(tmp_path):
    result = F.main([*TINY, "--calibrate-on", "neighbours", "--calibration", "8", "--db",
                     f"sqlite:///{tmp_path / 'f.db'}"])
    assert result["calibrated_on"] == "neighbours" and result["calibration_requests"] == [8, 8, 8, 8]
    runs = result["runs"]  # in round order: before, evaluated, after
    assert runs["calibration"][0] < runs["live"][0] < runs["calibration"][1] < runs["calibration"][2] < runs["live"][1]
    assert [r["kind"] for r in result["backend_slowdown_by_run"]] == ["calibration", "evaluated", "calibration"] * 2
    assert result["completed"] == 24 and math.isfinite(result["e2e_p50_err_pct"])


def test_a_round_the_machine_ran_at_another_pace_is_replaced_and_reported(tmp_path):
    # No two live runs keep the same pace to within 1e-9: every round is unsteady, so rounds are
    # replaced up to --max-rounds, and with none steady all of them are pooled and flagged.
    args = [a for a in TINY if a not in ("--max-pace-gap", "0", "--rounds", "2")]
    result = F.main([*args, "--rounds", "1", "--max-pace-gap", "1e-9", "--max-rounds", "2",
                     "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert result["rounds_run"] == 2 and result["rounds"] == 2 and not result["steady"]
    assert [r["round"] for r in result["round_pace"]] == [1, 2]
    # The gap is reported as measured (rounded to 0.1%: two runs can agree to that, so it may read 0.0).
    assert all(r["calibration"] > 0 and r["evaluated"] > 0 for r in result["round_pace"])
    assert all(abs(r["gap_pct"] - 100 * (r["evaluated"] / r["calibration"] - 1)) < 0.2 for r in result["round_pace"])
    assert result["completed"] == 24 and len(result["runs"]["live"]) == 2


def test_only_steady_rounds_are_pooled():
    def rnd(i: int, cal: float, live: float):
        return F.Round(i, [], None, cal, live)

    rounds = [rnd(0, 1.0, 1.05), rnd(1, 1.0, 1.3), rnd(2, 1.2, 1.0), rnd(3, 1.1, 1.0)]
    assert rounds[1].pace_gap == pytest.approx(0.3) and rounds[2].pace_gap == pytest.approx(-1 / 6)
    assert [r.index for r in F.pooled_rounds(rounds, 0.1)] == [0, 3]
    assert [r.index for r in F.pooled_rounds(rounds, 0.0)] == [0, 1, 2, 3]  # 0: every round
    assert [r.index for r in F.pooled_rounds(rounds[1:3], 0.1)] == [1, 2]  # none steady: all of them


def test_rounds_are_played_until_enough_are_steady_or_the_budget_is_spent():
    # Each fake run's "samples" is its pace; rounds 1 and 3 have their evaluated run 20% slower.
    paces = iter([1.0, 1.2, 1.0, 1.01, 1.0, 1.2, 1.0, 0.98])
    calls = []

    def live_run(kind, i, reqs, seed):
        calls.append((i, kind))
        return F.LiveRun([], [next(paces)], i, 0.0)

    def pace(samples):
        return float(samples[0])

    ev = [TraceRequest("e", 0.0, 4, 2)]

    def plan(i):
        return F.round_plan(i, [], ev, [], neighbours=False)

    got = F.play_rounds(live_run, pace, plan, wanted=2, max_rounds=8, max_gap=0.05)
    assert [r.index for r in got] == [0, 1, 2, 3] and [r.steady(0.05) for r in got] == [False, True, False, True]
    assert [r.index for r in F.pooled_rounds(got, 0.05)] == [1, 3]
    assert calls[:4] == [(0, "calibration (rehearsal)"), (0, "live"), (1, "live"), (1, "calibration (rehearsal)")]
    paces = iter([1.0, 1.3] * 4)
    assert len(F.play_rounds(live_run, pace, plan, wanted=2, max_rounds=3, max_gap=0.05)) == 3  # the budget


def test_bad_round_options_are_refused(capsys):
    for bad in (["--rounds", "0"], ["--max-pace-gap", "-0.1"]):
        with pytest.raises(SystemExit):
            F.parse_args(bad)
        assert bad[0] in capsys.readouterr().err


def test_the_help_names_the_json_keys_and_every_default_once(capsys):
    """The keys the checks read were in the module docstring only; options without help showed no default; the
    ones whose help gave it said "(default: None)" beside it."""
    with pytest.raises(SystemExit):
        F.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key in ("ttft_p50_err_pct", "e2e_p50_err_pct", "ttft_p99_err_pct", "e2e_p99_err_pct", "live_noise_e2e_p50_pct",
                "high_load_e2e_p50_err_pct", "capacity_err_pct", "rounds", "rounds_dropped"):
        assert key in text
    assert "(default: None)" not in text and "aims at (default: 64" in text


def test_round_plans_alternate_the_rehearsal_around_the_evaluated_run():
    before, ev, after = [TraceRequest("b", 0.0, 4, 2)], [TraceRequest("e", 0.0, 4, 2)], [TraceRequest("a", 0.0, 4, 2)]
    kinds = [[k for k, _, _ in plan] for plan in F.round_plans(3, before, ev, after, neighbours=False)]
    assert kinds == [["calibration (rehearsal)", "live"], ["live", "calibration (rehearsal)"],
                     ["calibration (rehearsal)", "live"]]
    # A rehearsal replays the evaluated run's prompt tokens too (the same seed).
    assert all(len({seed for _, _, seed in plan}) == 1 for plan in F.round_plans(2, before, ev, after, neighbours=False))
    plans = F.round_plans(2, before, ev, after, neighbours=True)
    assert [[reqs for _, reqs, _ in plan] for plan in plans] == [[before, ev, after]] * 2
    assert F.round_plans(1, before, ev, [], neighbours=True)[0][-1][0] == "live"


def test_the_p50_standard_error_grows_with_a_gap_at_the_median():
    smooth = [F.RequestTimes(str(i), 0.0, 0.01, 0.1 + 0.001 * i, 10, "completed") for i in range(100)]
    gapped = [F.RequestTimes(str(i), 0.0, 0.01, (0.1 if i < 50 else 0.2) + 0.0001 * i, 10, "completed")
              for i in range(100)]
    assert 0 < F.p50_standard_error(smooth, "e2e") < F.p50_standard_error(gapped, "e2e")
    assert math.isnan(F.p50_standard_error(smooth[:1], "e2e"))


# --- the out-of-sample protocol (the default) -------------------------------------------------------

from fidelity_lib import capacity as CAP  # noqa: E402  (benchmarks/ is on sys.path once fidelity.py is loaded)
from fidelity_lib.metrics import busiest_busy_fraction, e2e_correlation, live_spread  # noqa: E402
from fidelity_lib.pace import PaceLog  # noqa: E402
from fidelity_lib.profiling import generic_grid  # noqa: E402
from fidelity_lib.saturation import attribution_points  # noqa: E402
from fidelity_lib.slices import (Scaling, at_rate, carve_windows, count_for, going_round, poisson_at_rate, ramp,  # noqa: E402
                                 read_requests)
from fidelity_lib.worker_probe import WorkerProbe, pace_factor, probe_pace  # noqa: E402
from controlplane.live.iteration_samples import IterationSample  # noqa: E402
from controlplane.types import Decision  # noqa: E402


def test_windows_are_consecutive_disjoint_and_later_than_the_calibration():
    raw = read_requests(bundled_trace_path(), "azure", start_s=600.0, count=400, seed=0)
    scaling = Scaling.fit(raw[:100], prompt_scale="auto", output_scale="auto", prompt_p50=64, output_p50=16,
                          max_prompt=256, max_output=48)
    wins = carve_windows(raw, [("calibration", 100), ("low-1", 60), ("high-2", 120), ("capacity", 50)], scaling)
    assert [len(w.requests) for w in wins] == [100, 60, 120, 50]
    for a, b in zip(wins, wins[1:]):
        assert a.trace_end_s <= b.trace_start_s and not (a.ids & b.ids)
    assert all(w.requests[0].arrival_s == 0 for w in wins)
    with pytest.raises(SystemExit, match="capacity"):
        carve_windows(raw, [("calibration", 300), ("capacity", 200)], scaling)


def test_a_capacity_window_shorter_than_its_sweep_needs_goes_round_its_requests():
    """A worker faster than the trace is long (this host's quiet phase, or a GPU) stopped the default protocol after
    its calibration ('window capacity needs 3063 more'): the sweep's runs now repeat the window's lengths."""
    assert CAP.capacity_window_size(need=4000, left=5000, min_requests=100) == (4000, False)
    assert CAP.capacity_window_size(need=4000, left=1158, min_requests=100) == (1158, True)
    assert CAP.capacity_window_size(need=4000, left=50, min_requests=100) == (4000, False)  # refused by the window
    reqs = [TraceRequest(str(i), float(i), 8 + i, 4) for i in range(3)]
    assert going_round(reqs, 2) == reqs[:2]
    seven = going_round(reqs, 7)
    assert [r.request_id for r in seven] == ["0", "1", "2", "0#2", "1#2", "2#2", "0#3"]
    assert [r.prompt_tokens for r in seven] == [8, 9, 10, 8, 9, 10, 8]
    assert len({r.request_id for r in poisson_at_rate(seven, 5.0, seed=0)}) == 7  # unique ids for the run


def test_replay_rates_and_the_calibration_ramp():
    reqs = [TraceRequest(str(i), float(i * i), 8, 4) for i in range(21)]  # uneven gaps
    fast = at_rate(reqs, 5.0)
    assert fast[-1].arrival_s == pytest.approx(20 / 5.0)
    assert fast[4].arrival_s / fast[2].arrival_s == pytest.approx(16 / 4)  # the gaps keep their shape
    both = ramp(reqs, [2.0, 8.0], duration_s=4.0)
    assert [r.request_id for r in both] == [r.request_id for r in reqs]
    assert [r.arrival_s for r in both] == sorted(r.arrival_s for r in both)
    first = [r for r in both if int(r.request_id) < 5]  # count_for(2/s, 2 s) = 5 requests at 2/s
    assert first[-1].arrival_s == pytest.approx(4 / 2.0)


def test_the_capacity_sweep_replays_a_window_as_a_poisson_process_of_each_rate():
    reqs = [TraceRequest(str(i), 0.0, 8 + i % 5, 4) for i in range(2000)]
    slow, fast = poisson_at_rate(reqs, 2.0, seed=0), poisson_at_rate(reqs, 8.0, seed=0)
    assert [r.prompt_tokens for r in fast] == [r.prompt_tokens for r in reqs] and slow[0].arrival_s == 0
    assert (len(reqs) - 1) / slow[-1].arrival_s == pytest.approx(2.0, rel=0.1)
    assert [4 * f.arrival_s for f in fast] == pytest.approx([s.arrival_s for s in slow])  # the same gaps, scaled
    assert poisson_at_rate(reqs, 2.0, seed=1)[5].arrival_s != slow[5].arrival_s


def test_a_pace_correction_only_uses_measurements_taken_before_the_run():
    now = iter([1.0, 2.0, 5.0, 9.0])
    log = PaceLog(clock=lambda: next(now))
    log.record("before calibration", 0.8, reference=True)  # t=1
    log.record("after calibration", 1.2, reference=True)  # t=2: reference pace 1.0
    log.record("round 1", 1.1)  # t=5
    assert log.factor(6.0, "probe")[0] == pytest.approx(1.1)
    assert log.factor(6.0, "none") == (1.0, None)
    log.record("round 2", 2.0)  # t=9: after a run starting at t=6, so never used for it
    factor, used = log.factor(6.0, "probe")
    assert used.label == "round 1" and used.taken_s < 6.0 and factor == pytest.approx(1.1)
    assert log.factor(9.5, "probe")[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="reference"):
        log.factor(1.5, "probe")  # the reference is not complete before t=2
    with pytest.raises(ValueError, match="pace correction"):
        log.factor(6.0, "later")


def test_the_worker_probe_pace_is_its_iterations_median_time_over_the_models():
    class Flat:  # every shape 10 ms
        def iteration_s(self, shape):
            return 0.010

    def sample(i, ms, nd):
        row = {"num_prefill_seqs": 0, "num_prefill_tokens": 0, "num_decode_seqs": nd, "sum_decode_context": 64 * nd,
               "sum_prefill_context": 0, "iteration_s": ms / 1e3}
        return IterationSample("w", i, i * 0.02, i * 0.02 + ms / 1e3, row)

    samples = [sample(0, 12, 1), sample(1, 13, 16), sample(2, 40, 16)]  # one stalled iteration: the median ignores it
    assert probe_pace(samples, Flat()) == pytest.approx(1.3)
    assert probe_pace([], Flat()) is None
    # a run's factor: its probe over the mean of the frozen calibration runs' probes; 1.0 when either is missing
    assert pace_factor(1.3, [1.0, 1.6]) == pytest.approx(1.0)
    assert pace_factor(1.2, [1.0, None]) == pytest.approx(1.2)
    assert pace_factor(None, [1.0]) == 1.0 and pace_factor(1.2, [None]) == 1.0
    # the probe's load comes from the model's limits, never from a trace
    assert WorkerProbe.for_limits(256, 48, 128) == WorkerProbe(128, 24, 16)
    assert WorkerProbe.for_limits(32, 8, 8) == WorkerProbe(16, 8, 8)


def test_capacity_is_where_the_slo_metric_crosses_the_bound():
    got = CAP.crossing_rate([1.0, 2.0, 3.0], [0.1, 0.5, 2.0], slo=1.0)
    assert got.status == "within" and 2.0 < got.rate < 3.0
    assert got.rate == pytest.approx(2.0 + math.log(2.0) / math.log(4.0))  # linear in log latency
    assert CAP.crossing_rate([1.0, 2.0], [0.1, 0.2], 1.0).status == "above"
    assert CAP.crossing_rate([1.0, 2.0], [3.0, 4.0], 1.0).status == "below"
    assert CAP.crossing_rate([2.0, 1.0], [math.inf, 0.5], 1.0) == CAP.Crossing(1.0, "within")  # a run that failed
    # bisection on a metric that crosses 1.0 at rate 7: it doubles its bracket, then closes in
    assert CAP.bisect_capacity(lambda r: r / 7.0, 1.0, low=0.1, high=1.0, steps=30) == pytest.approx(7.0, rel=1e-3)


def test_the_adaptive_sweep_adds_rates_until_the_live_side_crosses_or_the_cap():
    step = dict(sim_capacity=10.0, step=0.15, max_fraction=2.5, min_fraction=0.25)
    rates = [7.0, 8.5, 10.0, 11.5, 13.0]
    # the live side crossed inside the sweep: nothing is added
    assert CAP.next_sweep_rate(rates, [0.2, 0.3, 0.5, 2.0, 3.0], 1.0, **step) is None
    # within the SLO at every rate: one step of 0.15 x the simulated capacity above the highest, in any order
    assert CAP.next_sweep_rate(rates[::-1], [0.2] * 5, 1.0, **step) == pytest.approx(14.5)
    # the last step is clipped to the cap, and once the cap was swept the sweep ends without a crossing
    assert CAP.next_sweep_rate([7.0, 24.0], [0.2, 0.3], 1.0, **step) == pytest.approx(25.0)
    assert CAP.next_sweep_rate([7.0, 25.0], [0.2, 0.3], 1.0, **step) is None
    # the capacity window's requests cap it lower still
    assert CAP.next_sweep_rate(rates, [0.2] * 5, 1.0, **step, max_rate=13.5) == pytest.approx(13.5)
    assert CAP.next_sweep_rate([7.0, 13.5], [0.2, 0.2], 1.0, **step, max_rate=13.5) is None
    # over the SLO at every rate (a failed run counts as over): downwards to the floor, 0.25 x the capacity
    assert CAP.next_sweep_rate(rates, [2.0, math.inf, 3.0, 4.0, 5.0], 1.0, **step) == pytest.approx(5.5)
    assert CAP.next_sweep_rate([3.0, 7.0], [2.0, 3.0], 1.0, **step) == pytest.approx(2.5)
    assert CAP.next_sweep_rate([2.5, 7.0], [2.0, 3.0], 1.0, **step) is None
    # driven as the protocol drives it, on a live side whose SLO metric crosses 1.0 at 17/s
    swept = list(rates)
    while (nxt := CAP.next_sweep_rate(swept, [r / 17.0 for r in swept], 1.0, **step)) is not None:
        swept.append(nxt)
    assert swept[5:] == pytest.approx([14.5, 16.0, 17.5])
    assert CAP.crossing_rate(swept, [r / 17.0 for r in swept], 1.0).status == "within"
    with pytest.raises(ValueError):
        CAP.next_sweep_rate(rates, [0.2] * 5, 1.0, sim_capacity=10.0, min_fraction=3.0, max_fraction=2.5)


def test_the_capacity_window_is_sized_for_the_sweeps_cap():
    # a run at the cap (2.5 x the reference rate) lasts the sweep run's length on the window's requests
    n = CAP.capacity_window_requests(20.0, 20.0, (0.7, 1.0, 1.3), 2.5)
    assert n == count_for(50.0, 20.0) == 1001
    assert CAP.window_max_rate(n, 20.0) == pytest.approx(50.0) and count_for(CAP.window_max_rate(n, 20.0), 20.0) == n
    # planned fractions above the cap size it instead
    assert CAP.capacity_window_requests(20.0, 20.0, (0.5, 3.0), 2.5) == count_for(60.0, 20.0)


def test_the_sweep_points_batching_is_summarised_alike_on_both_sides():
    from controlplane.live.iteration_samples import IterationSample
    from fidelity_lib.saturation import BatchLog, attribution_points, batching_summary, live_summary, sim_summary

    times = [F.RequestTimes(str(i), float(i), i + 0.1, i + 2.0, 4, "completed") for i in range(3)]
    times.append(F.RequestTimes("3", 3.0, None, None, 0, "failed"))
    shapes = [(2, 0), (0, 2), (1, 2), (0, 3), (0, 3), (0, 3)]
    got = batching_summary(shapes, times, sent=4)
    assert got["span_s"] == pytest.approx(4.0) and got["iterations_per_s"] == pytest.approx(1.5)
    assert got["output_tokens_per_s"] == pytest.approx(3.0) and got["mean_batch_seqs"] == pytest.approx(16 / 6, abs=0.01)
    assert got["prefill_iteration_pct"] == pytest.approx(33.3) and got["mean_prefill_prompts"] == pytest.approx(1.5)
    assert got["mean_decode_seqs"] == pytest.approx(2.75) and got["not_completed"] == 1
    assert got["statuses"] == {"failed": 1}
    # the live side from its iteration rows (0.5 s each, hand-offs 0 between back-to-back ones)
    rows = [{"num_prefill_seqs": p, "num_decode_seqs": d, "num_prefill_tokens": 8 * p, "iteration_s": 0.4}
            for p, d in shapes]
    samples = [IterationSample("w", k, 0.5 * k, 0.5 * k + 0.5, row) for k, row in enumerate(rows)]
    live = live_summary(samples, times, 4)
    assert {k: live[k] for k in got} == got
    assert live["busy_pct"] == pytest.approx(75.0) and live["mean_iteration_ms"] == pytest.approx(500.0)
    # the simulated side from its batch decisions (a batch of n iterations counts n times)
    log = BatchLog()
    for k, (p, d) in enumerate(shapes[:3]):
        log.cp_on_event(Decision(float(k), "cp_form_batch", "core", "batch", "w", None,
                                 {"batch": k, "prefill": p, "prefill_tokens": 8 * p, "decode": d, "iterations": 1}))
    log.cp_on_event(Decision(4.0, "cp_form_batch", "core", "batch", "w", None,
                             {"batch": 4, "prefill": 0, "prefill_tokens": 0, "decode": 3, "iterations": 3}))
    log.cp_on_event(Decision(5.0, "cp_route_request", "core", "route", "1", None, {"worker": "w"}))
    assert sim_summary(log, times, 4) == got
    # the attribution's points: the highest rates, in rate order
    assert attribution_points([7.0, 13.0, 8.5, 14.5, 10.0], 3) == [4, 1, 3]
    assert attribution_points([1.0, 2.0], 3) == [0, 1] and attribution_points([1.0], 0) == []


def test_noise_floor_busy_fraction_and_per_request_correlation():
    def times(e2es):
        return [F.RequestTimes(str(i), 0.0, 0.01, e, 4, "completed") for i, e in enumerate(e2es)]

    assert live_spread([times([1.0, 1.0, 1.0]), times([1.2, 1.2, 1.2])], "e2e") == pytest.approx(100 * 0.2 / 1.1)
    assert math.isnan(live_spread([times([1.0])], "e2e"))
    assert e2e_correlation(times([1.0, 2.0, 3.0, 4.0]), times([1.1, 2.3, 2.9, 4.2])) > 0.95
    assert e2e_correlation(times([1.0, 2.0, 3.0]), times([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # one worker busy 45 of the 60 s starting at t=10 (and idle before): 75%
    assert busiest_busy_fraction([(0.0, 1.0), (10.0, 40.0), (50.0, 65.0)]) == pytest.approx(0.75)
    assert busiest_busy_fraction([(0.0, 1.0), (1.0, 2.0)]) == pytest.approx(1.0)  # a run shorter than a minute


def test_the_generic_grid_comes_from_the_model_limits_alone():
    g = generic_grid(256, 48, 32, 2, mixed=False)
    assert tuple(g.prefill_tokens) == (0, 16, 64, 256) and tuple(g.context_lens) == (38, 152, 304)
    assert tuple(g.decode_batch_sizes) == (0, 1, 2, 4, 8, 16, 32) and g.interleave and g.spread and not g.mixed
    assert generic_grid(32, 8, 8, 1).prefill_tokens == (0, 16, 32)


OOS_TINY = ["--pool", "thread", "--repeats", "1", "--max-prompt-tokens", "32", "--max-output-tokens", "8",
            "--prompt-p50", "16", "--output-p50", "4", "--grid-max-batch", "8", "--calibration-s", "3", "--low-s", "2",
            "--high-s", "3", "--capacity-s", "2", "--low-slices", "1", "--high-slices", "1", "--runs-per-slice", "2",
            "--capacity-fractions", "0.8,1.25", "--capacity-max-fraction", "1.4"]


def test_the_out_of_sample_protocol_end_to_end(tmp_path, capsys):
    result = F.main([*OOS_TINY, "--pace-correction", "probe", "--db", f"sqlite:///{tmp_path / 'f.db'}",
                     "--profile-out", str(tmp_path / "p.json")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    for key in ("ttft_p50_err_pct", "e2e_p50_err_pct", "ttft_p99_err_pct", "e2e_p99_err_pct", "live_noise_e2e_p50_pct",
                "high_load_e2e_p50_err_pct", "capacity_err_pct", "rounds", "rounds_dropped"):
        assert key in result
    # every round of every slice reported, none dropped or replaced
    assert result["protocol"] == "out-of-sample"
    assert result["rounds"] == result["rounds_planned"] == 4 and result["rounds_dropped"] == 0
    detail = result["round_detail"]
    assert [(d["slice"], d["run"]) for d in detail] == [("low-1", 1), ("high-2", 1), ("low-1", 2), ("high-2", 2)]
    assert all(d["completed"] == d["requests"] for d in detail)
    # the host's contention is reported per round; a thread-pool worker's CPU is the driver's process's
    assert all("others_cores_mean" in d and d["worker_cpu_per_backend"] is None for d in detail)
    # the calibration never saw the evaluated requests: an earlier, disjoint window of the trace
    cal, *rest = result["windows"]
    assert cal["name"] == "calibration" and result["calibration_overlap_requests"] == 0
    assert len(result["calibration_runs"]) == 2  # light, then heavy: both before any evaluated run
    assert max(result["calibration_runs"]) < min(d["live_run"] for d in detail)
    # the same window calibrated 3 times (the default), every repeat before any evaluated run; the median frozen
    repeats = result["calibration_repeat_runs"]
    assert result["calibration_repeats"] == len(repeats) == 3 and all(len(r) == 2 for r in repeats)
    assert max(max(r) for r in repeats) < min(d["live_run"] for d in detail)
    k = result["calibration_frozen_repeat"]
    assert repeats[k - 1] == result["calibration_runs"] and result["calibration_repeat_vs_frozen_pct"][k - 1] == 0
    vs = result["calibration_repeat_vs_frozen_pct"]
    assert sorted(vs)[1] == 0 and math.isfinite(result["calibration_spread_pct"])  # the middle one of three
    ms = result["calibration_repeat_mean_iteration_ms"]
    assert result["calibration_spread_pct"] == pytest.approx(100 * (max(ms) - min(ms)) / (sum(ms) / 3), abs=0.02)
    # the rounds' error had each repeat been frozen (unpaced): the frozen repeat's is the unpaced error
    by_repeat = result["err_by_calibration_repeat"]
    assert [d["repeat"] for d in by_repeat] == [1, 2, 3]
    assert by_repeat[k - 1]["e2e_p50_err_pct"] == result["unpaced_err_pct"]["e2e_p50"]
    assert all(cal["trace_end_s"] <= w["trace_start_s"] for w in rest)
    # with the probe, each round's pace comes from one taken before its live run started
    assert result["pace_correction"] == "probe"
    # the probes around the frozen repeat's runs are the reference pace
    assert [m["label"] for m in result["pace_references"]] == [f"before calibration {k}", f"after calibration {k}"]
    for d in detail:
        assert d["pace_from"] == f"round {d['round']}" and d["pace_measured_at_s"] < d["live_started_at_s"]
    # the frozen profile is the file whose hash was printed
    assert result["profile_sha256"] == hashlib.sha256((tmp_path / "p.json").read_bytes()).hexdigest()
    # the experiments' variants, fitted from the frozen repeat's samples, are simulated on every round
    for variant in ("idle_step_err_pct", "unnormalised_err_pct"):
        assert set(result[variant]) >= {"ttft_p50", "e2e_p50", "low_e2e_p50", "high_e2e_p50"}
    # the planned rates, then at most one added (the cap, 1.4 x the simulated capacity) while the live side had not
    # crossed; or downwards (to 0.25 x) while it was over the SLO at 0.8 x already
    sweep, added = result["capacity_sweep"], result["capacity_points_added"]
    assert len(sweep) == 2 + added and [p["added"] for p in sweep] == [False, False] + [True] * added
    assert result["capacity_status"]["live"] in ("within", "above", "below") and result["capacity_status"]["note"]
    if result["capacity_status"]["live"] == "above":  # the sweep went up to its cap (a planned rate may be past it
        # already when the window's requests feed less than the planned top fraction)
        assert max(p["rate"] for p in sweep) >= result["capacity_sweep_cap_rps"] * (1 - 1e-3)
    assert (result["capacity_err_pct"] is None) == (result["capacity_status"]["live"] != "within"
                                                    or result["capacity_status"]["sim"] != "within")
    # every sweep point compared after the fact: batching and pace on each side, the frozen profile per iteration,
    # and on the highest points the simulation on the run's own iterations
    points = result["capacity_attribution"]
    assert [p["rate"] for p in points] == [p["rate"] for p in sweep]
    for p in points:
        assert p["live"]["iterations"] > 0 and p["sim"]["iterations"] > 0 and p["live"]["not_completed"] == 0
        assert p["live"]["mean_batch_seqs"] >= 1 and p["sim"]["mean_batch_seqs"] >= 1
        assert math.isfinite(p["iteration_error_pct"]) and p["iteration_error_by_shape"]
        assert p["live"]["e2e_p90_ms"] == pytest.approx(sweep[points.index(p)]["live_ms"], abs=0.11)
    # the run's own iterations simulated at the sweep's highest rates (a sweep extended downwards on a slow host
    # has more points than those)
    deep = attribution_points([p["rate"] for p in points])
    assert all(("own_iterations" in p) == (i in deep) for i, p in enumerate(points))
    assert set(result["attribution"]) == {"low-1", "high-2"}
    # every iteration 2% dearer: the simulated E2E p50 goes up (by about 2% when nothing queues, more when it does)
    # (a slice's p50 can stay or even drop when slower iterations batch its requests differently: on the
    # busy host of a full test run one did, so the test asks for finite figures and one slice moving up)
    sens = [a[f"e2e_{q}_pct_per_2pct_slower"] for a in result["attribution"].values() for q in ("p50", "p90")]
    assert all(math.isfinite(x) for x in sens) and max(sens) > 0
    assert all(math.isfinite(result[k]) for k in ("ttft_p50_err_pct", "e2e_p50_err_pct", "live_noise_e2e_p50_pct"))


def test_without_pace_correction_every_round_runs_on_the_frozen_profile_as_it_is(tmp_path):
    assert F.parse_args([]).pace_correction == "none"  # the default
    assert F.parse_args([]).calibration_repeats == 3  # the default
    result = F.main([*OOS_TINY, "--low-slices", "0", "--capacity-fractions", "0.5,2", "--calibration-repeats", "1",
                     "--db", f"sqlite:///{tmp_path / 'f.db'}", "--profile-out", str(tmp_path / "p.json")])
    assert result["rounds"] == 2 and result["rounds_dropped"] == 0
    # one calibration: its spread is not known (null with why), not 0 (which read as perfectly repeatable)
    assert result["calibration_spread_pct"] is None and "one calibration" in result["calibration_spread_note"]
    assert result["calibration_repeat_runs"] == [result["calibration_runs"]]
    assert result["err_by_calibration_repeat"] == []
    assert all(d["pace"] == 1.0 and d["pace_from"] is None for d in result["round_detail"])
    assert result["unpaced_err_pct"]["e2e_p50"] == result["e2e_p50_err_pct"]  # the same simulation
    assert result["profile"] == str(tmp_path / "p.json")
    assert len(result["capacity_sweep"]) == 2 + result["capacity_points_added"]
    assert result["max_padding"] == F.DEFAULT_MAX_PADDING  # both sides ran the padded prefill's cap
    assert {"under_40pct", "40_80pct", "over_80pct", "correlation"} <= set(result["pace_by_busy"])
    # the serving workers' own probes are always taken and reported beside the default
    assert len(result["worker_probe_reference"]) == 2 and all(p > 0 for p in result["worker_probe_reference"])
    assert all(d["worker_probe_factor"] > 0 for d in result["round_detail"])
    assert all(math.isfinite(v) for k, v in result["worker_probe_err_pct"].items() if not k.startswith("low_"))
    # the stored runs give the rounds' figures: the live run holds the slice under its trace ids (and the worker's
    # warm-up and probe, left out of the comparison), so `runs compare LIVE SIM` pairs them
    from controlplane.compare import compare_runs
    from controlplane.storage import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        for d in result["round_detail"]:
            e2e = next(x for x in compare_runs(engine, [d["live_run"]], [d["sim_run"]], n_resamples=100)
                       if (x.metric, x.stat) == ("e2e", "p50"))
            # (the others named in arrival order: the warm-up's first, then the probe's)
            assert e2e.method == "paired" and "others left out: warm-up-0, warm-up-1, " in e2e.covers
            assert 100 * e2e.diff / e2e.a == pytest.approx(d["e2e_p50_err_pct"], abs=0.006)
    finally:
        engine.dispose()
    # and the user's `controlplane calibrate LIGHT+HEAVY --profile GRID` on them, with the grid profile the finished
    # run keeps in its folder (the JSON's grid_profile), writes the frozen profile's rows and overhead again
    from typer.testing import CliRunner

    from controlplane.cli import bench

    light, heavy = result["calibration_runs"]
    again = tmp_path / "again.json"
    res = CliRunner().invoke(bench.app, ["calibrate", f"{light}+{heavy}", "--db", f"sqlite:///{tmp_path / 'f.db'}",
                                         "--profile", result["grid_profile"], "-o", str(again)])
    assert res.exit_code == 0, res.output
    frozen, refit = json.loads((tmp_path / "p.json").read_text()), json.loads(again.read_text())
    assert refit["rows"] == frozen["rows"]
    for key in ("overhead_base_s", "overhead_per_seq_s", "overhead_per_prompt_s", "handoff_s", "live_slowdown"):
        assert refit[key] == frozen[key], key


def test_with_the_worker_probe_each_round_runs_at_its_own_workers_pace_measured_before_its_first_arrival(tmp_path):
    result = F.main([*OOS_TINY, "--low-slices", "0", "--capacity-fractions", "0.5,2", "--calibration-repeats", "1",
                     "--pace-correction", "worker-probe", "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert result["pace_correction"] == "worker-probe" and result["rounds"] == 2 and result["rounds_dropped"] == 0
    for d in result["round_detail"]:
        assert d["pace_from"] == "worker probe" and d["pace"] == d["worker_probe_factor"] > 0
        assert d["pace_measured_at_s"] < d["live_started_at_s"]
    # the rounds simulated at the probe's pace are the headline: the diagnostic equals it
    assert result["worker_probe_err_pct"]["e2e_p50"] == result["e2e_p50_err_pct"]
    assert all(p["pace"] > 0 for p in result["capacity_sweep"])  # each sweep point at its own worker's pace


def test_the_padded_prefill_cap_is_set_for_both_sides_unless_the_config_says_otherwise():
    from controlplane.config import RunConfig, load_config
    from fidelity_lib.profiling import with_max_padding

    assert F.parse_args([]).max_padding == F.DEFAULT_MAX_PADDING == 1.25
    assert F.parse_args(["--max-padding", "none"]).max_padding is None
    assert F.parse_args(["--max-padding", "2"]).max_padding == 2.0
    base = load_config(None)
    capped = with_max_padding(base, 1.25)
    assert capped.plugins.settings["continuous-batching"] == {"max_padding": 1.25}
    assert with_max_padding(base, None) is base
    data = base.model_dump()
    data["plugins"]["settings"] = {"continuous-batching": {"policy": "vllm", "max_padding": 3.0}}
    own = RunConfig(**data)
    assert with_max_padding(own, 1.25).plugins.settings["continuous-batching"]["max_padding"] == 3.0  # the config's own
    data["plugins"]["settings"] = {"continuous-batching": {"policy": "sarathi"}}
    sarathi = RunConfig(**data)
    assert with_max_padding(sarathi, 1.25) is sarathi  # chunked prefills: nothing padded together to cap


def test_bad_protocol_options_are_refused(capsys):
    for bad in (["--runs-per-slice", "0"], ["--capacity-fractions", "1.0"], ["--high-load", "0"],
                ["--protocol", "rehearsal"], ["--calibration-repeats", "0"], ["--max-padding", "0.5"],
                ["--max-padding", "lots"], ["--capacity-max-fraction", "0.2"], ["--capacity-step-fraction", "0"]):
        with pytest.raises(SystemExit):
            F.parse_args(bad)
        assert bad[0] in capsys.readouterr().err


def test_a_bad_trace_option_is_refused_when_the_arguments_are_read(capsys, tmp_path):
    trace = tmp_path / "BurstGPT_1.csv"  # a few rows in BurstGPT's published layout
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "5,ChatGPT,472,18,490,Conversation log\n118,GPT-4,417,276,693,API log\n")
    for bad, message in ((["--trace", str(trace), "--opt", "bogus=1"], "unknown option(s) 'bogus' for trace format "
                                                                         "'burstgpt'; valid options: models"),
                         (["--opt", "failed=drop"], "unknown option(s) 'failed' for trace format 'azure'"),
                         (["--trace", str(tmp_path / "nope.csv")], "trace file not found: ")):
        with pytest.raises(SystemExit) as exited:
            F.parse_args(bad)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"error: {message}" in err and "Traceback" not in err, err
    assert F.parse_args(["--trace", str(trace), "--opt", "failed=drop"]).opt == ["failed=drop"]


def test_the_steadiness_summary_separates_drift_tail_faults_and_collector_time():
    from fidelity_lib.steadiness import VARIANTS, _summary

    def block(decode_ms, yard, faults=0, gc_ms=0.0, slow=None):
        steps = [("prefill", 0.02, 0.02, faults, 0.0)]
        steps += [("decode", decode_ms / 1e3, decode_ms / 2e3, faults, gc_ms / 1e3) for _ in range(99)]
        if slow is not None:  # one descheduled step: wall far above its CPU time
            steps[-1] = ("decode", slow / 1e3, decode_ms / 2e3, faults, 0.0)
        return (yard, steps, 0.0)

    got = _summary([block(5.0, 30.0, faults=2), block(6.0, 30.0, slow=50.0), block(4.0, 30.0)])
    assert got["decode_ms_by_block"] == [5.0, 6.0, 4.0]
    assert got["decode_spread_pct"] == pytest.approx(100 * 2 / 5, abs=0.05)  # (max - min) / mean of block medians
    assert got["decode_cpu_spread_pct"] == got["decode_spread_pct"]
    assert got["decode_over_yardstick_spread_pct"] == got["decode_spread_pct"]  # a steady yardstick changes nothing
    assert got["faults_per_step"] == pytest.approx(2 / 3, abs=0.01) and got["gc_ms_per_1000_steps"] == 0
    assert got["decode_p99_over_p50"] > 1.1 and got["cpu_over_wall"] < 0.5 and got["steps"] == 300
    assert "base" in VARIANTS and VARIANTS["steady"][1] == ("steady",)  # the fix kept, as the worker applies it


def test_steadiness_copies_of_a_variant_and_the_pass_by_pass_view():
    from fidelity_lib.steadiness import VARIANTS, by_pass, variant_of

    assert variant_of("steady#2") == "steady" and variant_of("thp-glibc") == "thp-glibc"
    assert "glibc.malloc.hugetlb=1" in VARIANTS["thp-glibc"][0]["GLIBC_TUNABLES"]
    # two processes that move together: the time's drift shows in the means, not between the processes
    got = by_pass({"steady#1": [8.0, 9.0], "steady#2": [8.0, 9.0 * 1.1]})
    assert [p["mean_ms"] for p in got] == [8.0, 9.45]
    assert got[0]["between_processes_pct"] == 0 and got[1]["between_processes_pct"] == pytest.approx(9.5, abs=0.05)


def test_the_heavy_calibration_run_can_arrive_as_a_poisson_process(tmp_path, capsys):
    assert F.parse_args([]).calibration_arrivals == "trace"  # the default
    result = F.main([*OOS_TINY, "--low-slices", "0", "--capacity-fractions", "0.5,2", "--calibration-repeats", "1",
                     "--calibration-arrivals", "poisson", "--db", f"sqlite:///{tmp_path / 'f.db'}",
                     "--profile-out", str(tmp_path / "p.json")])
    assert result["calibration_arrivals"] == "poisson" and result["rounds"] == 2 and result["rounds_dropped"] == 0
    assert "heavy: the next" in capsys.readouterr().out and math.isfinite(result["e2e_p50_err_pct"])
