"""benchmarks/fidelity.py: trace slicing and scaling, the comparison, and one tiny end-to-end run."""

from __future__ import annotations

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
    assert all(abs(r["gap_pct"]) > 0 and r["calibration"] > 0 and r["evaluated"] > 0 for r in result["round_pace"])
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
