"""benchmarks/autoscaling.py ends with one JSON line: each policy and static_peak with its numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.fixtures.benchmarks import never_called

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("autoscaling_benchmark", ROOT / "benchmarks" / "autoscaling.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_oscillations_count_up_then_down_within_the_window():
    events = [(0.0, 1, 2), (30.0, 2, 1), (100.0, 1, 2), (200.0, 2, 3), (400.0, 3, 2)]
    assert bench.oscillations(events, 60.0) == 1
    assert bench.oscillations(events, 300.0) == 2


def test_the_benchmark_prints_a_json_line_per_policy_and_static_peak(capsys):
    assert bench.main(["--limit", "400", "--speed-up", "8", "--max-replicas", "3", "--cold-start", "5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert {"seed-autoscaler", "hpa", "kpa", "slo-planner", "static_peak"} <= set(result)
    peak = result["static_peak"]["replicas"]  # the table names static peak's count
    assert [line.split("  ")[0] for line in out if line.startswith("static_peak")] == [f"static_peak (x{peak})"]
    assert "peak alive" in next(line for line in out if line.startswith("policy"))  # starting + ready + draining
    for row in result.values():
        assert {"slo_attainment", "gpu_hours", "scale_events", "oscillations", "cost_per_1k_requests"} <= set(row)
        assert row["cost_per_1k_requests"] > 0  # priced from the config's cluster.gpu_prices
        assert "slo_after_warmup" in row
        assert 0 <= row["slo_attainment"] <= 1 and row["gpu_hours"] > 0
    assert 1 <= result["static_peak"]["replicas"] <= 3
    assert result["static_peak"]["met_target"] is (result["static_peak"]["slo_attainment"] >= 0.99)


def test_a_fixed_count_named_as_a_policy_runs_at_start_replicas(capsys):
    # the bounds every autoscaler gets are not fixed-replicas' settings (it was a SettingsError traceback)
    assert bench.main(["--limit", "200", "--policies", "fixed-replicas", "--start-replicas", "2", "--no-static"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fixed-replicas"]
    assert row["scale_events"] == 0 and row["gpu_hours"] > 0


def test_policies_and_settings_from_the_command_line(capsys):
    assert bench.parse_sets(["hpa.target=8", "hpa.metric=running", "kpa.scale_to_zero=true"]) == {
        "hpa": {"target": 8, "metric": "running"}, "kpa": {"scale_to_zero": True}}
    assert bench.window_s("kpa", {}) == 60.0 and bench.window_s("hpa", {"scale_down_stabilization_s": 100}) == 100.0
    assert bench.main(["--limit", "200", "--policies", "hpa", "--set", "hpa.target=4", "--max-replicas", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"hpa", "static_peak"}


def test_a_static_peak_that_misses_the_target_says_so(capsys):
    # an SLO no count can meet (TTFT 1 ms): static_peak is the largest count tried, marked and explained
    assert bench.main(["--limit", "200", "--policies", "hpa", "--max-replicas", "2", "--ttft", "0.001"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["static_peak"]["met_target"] is False and result["static_peak"]["replicas"] == 2
    assert "no static count tried (1-2 replicas, --max-replicas 2) reached SLO attainment 0.99" in out


def test_attainment_after_warmup_counts_only_later_arrivals():
    from controlplane.config import SLOConfig
    from controlplane.types import Request, RequestStatus

    def req(i, arrival, ttft):
        r = Request(str(i), arrival, 10, 2)
        r.status, r.scheduled_s, r.first_token_s = RequestStatus.COMPLETED, arrival, arrival + ttft
        r.finish_s, r.output_tokens = arrival + ttft + 0.01, 2
        return r

    rows = [req(0, 0.0, 9.0), req(1, 5.0, 9.0), req(2, 20.0, 0.5), req(3, 30.0, 3.0)]
    assert bench.after_warmup(rows, SLOConfig(ttft_s=2.0, tpot_s=0.2), 10.0) == 0.5  # 2 of them, 1 in time
    assert bench.after_warmup(rows, SLOConfig(ttft_s=2.0, tpot_s=0.2), 0.0) == 0.25


def test_the_suite_replays_each_setup_and_records_every_run(capsys, tmp_path):
    out = tmp_path / "runs.jsonl"
    assert bench.main(["--suite", "--setups", "azure-code x0.5", "--limit", "200", "--speed-up", "8",
                       "--max-replicas", "3", "--cold-start", "5", "--policies", "hpa,slo-planner",
                       "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"azure-code x0.5"}
    assert {"hpa", "slo-planner", "static_peak"} <= set(result["azure-code x0.5"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["policy"] for r in rows[:2]] == ["hpa", "slo-planner"]
    assert all(r["policy"].startswith("static x") for r in rows[2:]) and rows[2:]  # every static count tried
    assert all(r["setup"] == "azure-code x0.5" and r["rate_scale"] == 0.5 for r in rows)
    with pytest.raises(SystemExit, match="unknown setup"):
        bench.main(["--suite", "--setups", "nope"])


def test_match_sweeps_each_baseline_up_to_the_planners_gpu_hours(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MATCH_SWEEPS", {"hpa": [{"target": 64.0}, {"target": 0.25}, {"target": 0.1}]})
    out = tmp_path / "runs.jsonl"
    assert bench.main(["--limit", "300", "--speed-up", "8", "--max-replicas", "4", "--cold-start", "5",
                       "--policies", "slo-planner", "--match", "--no-static", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row, planner = result["hpa matched"], result["slo-planner"]
    assert row["settings"] in ({"target": 64.0}, {"target": 0.25}, {"target": 0.1})
    tried = [json.loads(line) for line in out.read_text().splitlines()][1:]
    assert tried and all(r["policy"].startswith("hpa {") for r in tried)  # every run of the sweep recorded
    if row["reached"]:  # the fewest GPU-hours at or above the planner's, and the sweep stopped there
        assert row["gpu_hours"] >= planner["gpu_hours"]
        assert row["gpu_hours"] == min(r["gpu_hours"] for r in tried if r["gpu_hours"] >= planner["gpu_hours"])
        assert tried[-1]["gpu_hours"] >= planner["gpu_hours"]
    else:
        assert all(r["gpu_hours"] < planner["gpu_hours"] for r in tried) and len(tried) == 3
    assert row["planner_beats"] == (planner["slo_attainment"] > row["slo_attainment"]
                                    and planner["gpu_hours"] <= row["gpu_hours"])


def test_match_goes_toward_fewer_replicas_when_the_defaults_already_spend_more(monkeypatch, capsys):
    # the planner spends 10 GPU-h; hpa's first setting 12: the down sweep runs until one spends less (9), and the
    # match is the nearest above the planner's (10.5), not the defaults
    gpu = {16.0: 12.0, 20.0: 10.5, 24.0: 9.0, 32.0: 8.0}
    calls = []

    def fake_run(args, policy, n, settings=None, outcomes=None, stop_below=None):
        if policy == "slo-planner":
            return {"slo_attainment": 0.995, "gpu_hours": 10.0, "scale_events": 0, "oscillations": 0, "reversals": 0,
                    "cost_per_1k_requests": 1.0, "slo_after_warmup": 0.995, "plugin_errors": 0, "wall_s": 0.0}
        calls.append(settings["target"])
        return {"slo_attainment": 0.99, "gpu_hours": gpu[settings["target"]], "scale_events": 0, "oscillations": 0, "reversals": 0,
                "cost_per_1k_requests": 1.0, "slo_after_warmup": 0.99, "plugin_errors": 0,
                "wall_s": 0.0}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "MATCH_SWEEPS", {"hpa": [{"target": 16.0}, {"target": 12.0}]})
    assert bench.main(["--policies", "slo-planner", "--match", "--no-static", "--progress", "0"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hpa matched"]
    assert calls == [16.0, 20.0, 24.0]
    assert row["settings"] == {"target": 20.0} and row["reached"] and row["planner_beats"]


@pytest.mark.parametrize(("start", "tried", "peak"), [(2, [2, 3, 4], 4), (6, [3, 4, 5, 6], 4), (4, [3, 4], 4)])
def test_the_static_search_finds_the_fewest_replicas_from_either_side(monkeypatch, start, tried, peak):
    attainment = {1: 0.5, 2: 0.9, 3: 0.98, 4: 0.991, 5: 0.995, 6: 0.999}
    calls = []

    def fake_run(args, policy, n, settings=None, outcomes=None, stop_below=None):
        calls.append(n)
        return {"slo_attainment": attainment[n], "gpu_hours": float(n)}

    monkeypatch.setattr(bench, "run", fake_run)
    args = bench.argparse.Namespace(static_from=start, max_replicas=6, target=0.99, out=None)
    static = bench.static_search(args)
    assert sorted(calls) == tried and list(static) == tried
    assert min(k for k, r in static.items() if r["slo_attainment"] >= 0.99) == peak


def test_the_clairvoyant_timetable_starts_each_windows_replicas_a_lead_ahead():
    from autoscaling_clairvoyant import timetable, window_needs

    ok, miss = True, False
    outcomes = {1: [(10.0, ok), (70.0, miss), (75.0, miss), (200.0, ok)],  # minute 1 needs more than one
                2: [(10.0, ok), (70.0, ok), (75.0, miss), (200.0, ok)],
                3: [(10.0, ok), (70.0, ok), (75.0, ok), (200.0, ok)]}
    needs = window_needs(outcomes, 60.0, 0.99)
    assert needs == {0: 1, 1: 3, 3: 1}  # minute 2 had no arrivals
    assert window_needs({1: [(5.0, miss)], 2: [(5.0, miss)]}, 60.0, 0.99) == {0: 2}  # none met: the most tried
    table = timetable(needs, 60.0, 25.0)
    assert table == [(0.0, 1), (35.0, 3), (120.0, 1)]  # up 25 s before minute 1 opens, down when it closes
    assert timetable({}, 60.0, 25.0) == [(0.0, 1)]


def test_the_clairvoyant_bound_is_replayed_beside_static_peak(capsys):
    assert bench.main(["--limit", "400", "--speed-up", "8", "--max-replicas", "3", "--cold-start", "5",
                       "--policies", "slo-planner", "--clairvoyant"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"slo-planner", "static_peak", "clairvoyant"} <= set(result)
    assert result["clairvoyant"]["gpu_hours"] <= result["static_peak"]["gpu_hours"] * 1.05


def test_peak_minute_counts_the_minutes_below_the_target():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("autoscaling_peak_minute", ROOT / "benchmarks" / "autoscaling_peak_minute.py")
    peak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peak)
    outcomes = [(t + 0.5, True) for t in range(120)] + [(130.0 + i / 10, i % 4 != 0) for i in range(100)]
    bad, worst, minute = peak.minutes_below(outcomes, 0.99)
    assert (bad, minute) == (1, 2) and worst == pytest.approx(0.75)  # minute 2: 75 of 100 met it
    assert peak.minutes_below([(t + 0.5, True) for t in range(300)], 0.99) == (0, 1.0, 0)


def _peak_minute():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("autoscaling_peak_minute", ROOT / "benchmarks" / "autoscaling_peak_minute.py")
    peak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peak)
    return peak


def test_peak_minute_prints_a_table_and_ends_with_one_json_line(monkeypatch, capsys):
    peak = _peak_minute()

    def run(ns, policy, n, outcomes):  # x2 misses in minute 1, x3 meets every minute
        outcomes += [(t + 0.5, n >= 3 or t < 60 or t % 2 == 0) for t in range(120)]
        return {"slo_attainment": sum(ok for _, ok in outcomes) / len(outcomes), "gpu_hours": n / 30}

    monkeypatch.setattr(peak.bench, "run", run)
    assert peak.main(["azure-code x0.5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split()[:4] == ["setup", "static", "SLO", "GPU-h"]
    assert [line.split()[2] for line in out[1:-1]] == ["x2", "x3"]
    result = json.loads(out[-1])
    assert result["azure-code x0.5"]["replicas"] == 3
    assert result["azure-code x0.5"]["counts"]["2"] == {"slo_attainment": 0.75, "gpu_hours": pytest.approx(2 / 30),
                                                         "minutes_below": 1, "worst_minute": 1,
                                                         "worst_minute_slo": 0.5}


def test_a_rate_profile_from_the_command_line_is_applied_and_recorded(tmp_path, capsys):
    assert bench.parser().parse_args(["--rate-profile", "0:1,3436:2"]).rate_profile == ((0.0, 1.0), (3436.0, 2.0))
    with pytest.raises(SystemExit) as exited:
        bench.parser().parse_args(["--rate-profile", "0:1,60"])
    assert exited.value.code == 2
    assert "argument --rate-profile: point '60' is not TIME_S:FACTOR" in capsys.readouterr().err
    rows = {}
    for name, option in (("profile", ["--rate-profile", "0:2.5"]), ("scale", ["--rate-scale", "2.5"])):
        out = tmp_path / f"{name}.jsonl"
        assert bench.main(["--limit", "200", "--policies", "hpa", "--max-replicas", "2", "--out", str(out),
                           *option]) == 0
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    # a flat profile is --rate-scale, draw for draw: the same runs; the profile is in each line
    assert len(rows["profile"]) >= 2 and all(r["num_requests"] == 200 for r in rows["profile"])  # hpa, static
    assert [r["rate_profile"] for r in rows["profile"]] == ["0:2.5"] * len(rows["profile"])
    assert "rate_profile" not in rows["scale"][0]
    volatile = ("wall_s", "rate_profile", "rate_scale")
    assert [{k: v for k, v in r.items() if k not in volatile} for r in rows["profile"]] == [
        {k: v for k, v in r.items() if k not in volatile} for r in rows["scale"]]


def test_a_bad_transform_is_refused_before_any_replay_naming_its_option(capsys):
    for argv, message in ((["--speed-up", "0"], "--speed-up must be a finite number > 0, got 0"),
                          (["--window-start", "9", "--window-end", "2"],
                           "--window-end (2) must be greater than --window-start (9)")):
        with pytest.raises(SystemExit) as exited:
            bench.main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.endswith(f"error: {message}\n"), err


def test_a_bad_trace_option_is_refused_before_any_replay_naming_it(capsys, tmp_path):
    trace = tmp_path / "BurstGPT_1.csv"  # a few rows in BurstGPT's published layout
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "5,ChatGPT,472,18,490,Conversation log\n118,GPT-4,417,276,693,API log\n")
    for argv, message in (
            (["--trace", str(trace), "--opt", "bogus=1"],
             "unknown option(s) 'bogus' for trace format 'burstgpt'; valid options: models, log_types, failed, "
             "model_column, on_error"),
            (["--trace", str(trace), "--opt", "failed=skip"],
             "unknown failed 'skip' for format 'burstgpt'; valid choices: keep, drop"),
            (["--opt", "spread=none"], "unknown option(s) 'spread' for trace format 'azure'"),
            (["--trace", str(tmp_path / "nope.csv")], "trace file not found: ")):
        with pytest.raises(SystemExit) as exited:
            bench.main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"error: {message}" in err and "Traceback" not in err, err


def test_a_long_replay_prints_its_progress_on_stderr_without_changing_its_numbers(capsys):
    argv = ["--limit", "600", "--policies", "hpa", "--no-static", "--max-replicas", "2"]
    assert bench.main([*argv, "--progress", "0"]) == 0
    quiet = capsys.readouterr()
    assert "requests arrived" not in quiet.err
    assert bench.main([*argv, "--progress", "1e-9"]) == 0  # every callback (each 256 arrivals) prints
    loud = capsys.readouterr()
    lines = [line for line in loud.err.splitlines() if "requests arrived" in line]
    # each 256 arrivals, and (since 6c806f5) each simulated minute through idle gaps
    assert any(line.startswith("  hpa: 256 requests arrived, simulated 00:") for line in lines) and "(wall " in lines[0]
    assert loud.out.splitlines()[-1] == quiet.out.splitlines()[-1]  # the JSON line is the same


def test_progress_shows_days_of_simulated_time():
    from autoscaling_progress import Progress, clock_text

    assert clock_text(59.9) == "00:00:59" and clock_text(3 * 86400 + 3723) == "3d 01:02:03"
    ticks = iter([0.0, 5.0, 12.0, 13.0])
    lines = []
    p = Progress("static x4", 10.0, stream=type("S", (), {"write": lambda s, t: lines.append(t),
                                                          "flush": lambda s: None})(), clock=lambda: next(ticks))
    p(256, 60.0)   # 5 s after the start: not yet
    p(512, 90000.0)  # 12 s: printed
    p(768, 90001.0)  # 13 s: within 10 s of the last
    assert "".join(lines) == "  static x4: 512 requests arrived, simulated 1d 01:00:00 (wall 12 s)\n"


@pytest.mark.parametrize(("options", "message"), [
    (["--set", "hpa.bogus=3"], "--set: invalid plugin settings: plugins.settings.hpa.bogus: Extra inputs"),
    (["--set", "hpa.target=abc"], "--set: invalid plugin settings: plugins.settings.hpa.target: Input should be"),
    (["--set", "hpaa.target=8"], "--set hpaa.target: 'hpaa' is not an autoscaler benchmarked here"),
    (["--set", "kpa.target_concurrency=4"], "--set kpa.target_concurrency: 'kpa' is not among the policies run (hpa)"),
    (["--target", "1.5"], "--target is a share of requests, in (0, 1], got 1.5"),
    (["--setups", "foo"], "--setups picks setups of --suite: give --suite too"),
])
def test_a_bad_set_target_or_setups_is_a_usage_error_before_any_replay(capsys, options, message):
    """A bad --set key or value was a traceback at that policy's first replay; a misspelled --set policy, one
    for a policy --policies leaves out, and --setups without --suite were ignored (the run at the defaults, every policy over the whole hour); --target
    1.5 searched static counts that no count could reach."""
    with pytest.raises(SystemExit) as exited:
        bench.main([*options, "--policies", "hpa", "--no-static", "--limit", "10"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"error: {message}" in err and "Traceback" not in err, err


def test_an_unknown_or_empty_policy_list_is_refused_naming_the_autoscalers(capsys):
    for value, message in (("hpa,nope,least-loaded",
                            "--policies: unknown autoscaler(s) 'nope', 'least-loaded'; installed: seed-autoscaler, hpa"),
                           ("", "--policies names no policy in ''; autoscalers: seed-autoscaler, hpa")):
        with pytest.raises(SystemExit) as exited:
            bench.main(["--policies", value, "--limit", "10"])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"error: {message}" in err and "Traceback" not in err, err


def test_a_format_other_than_the_files_own_gets_a_note(capsys, tmp_path):
    trace = tmp_path / "qwen_traceA.jsonl"  # Qwen-Bailian's layout: Mooncake's keys, seconds, chat_id
    trace.write_text("".join(json.dumps({"chat_id": i, "parent_chat_id": -1, "timestamp": 2.0 * i, "input_length": 40,
                                         "output_length": 8, "type": "text", "turn": 1, "hash_ids": [i]}) + "\n"
                             for i in range(4)))
    argv = ["--trace", str(trace), "--policies", "hpa", "--no-static", "--progress", "0"]
    assert bench.main([*argv, "--format", "mooncake"]) == 0
    assert (f"note: --format mooncake, but {trace} reads as 'bailian' (its header or first object); replaying it as "
            "mooncake. Leave --format out to use 'bailian'.") in capsys.readouterr().err
    assert bench.main([*argv, "--format", "bailian"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_find_scale_brackets_the_scale_where_n_static_replicas_just_reach_the_target(monkeypatch, capsys):
    # attainment falls as the scale rises: 4 replicas reach 0.99 up to scale 3.0
    def fake_run(args, policy, n, settings=None, outcomes=None, stop_below=None):
        assert policy == "fixed-replicas" and n == 4
        return {"slo_attainment": 0.995 if args.rate_scale <= 3.0 else 0.95, "num_requests": 10, "wall_s": 0.0}

    monkeypatch.setattr(bench, "run", fake_run)
    assert bench.main(["--find-scale", "4", "--limit", "10", "--ttft", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    found = json.loads(out[-1])["find_scale"]
    assert found["replicas"] == 4 and 3.0 / 1.125 <= found["rate_scale"] <= 3.0 < found["above"]
    assert found["above"] / found["rate_scale"] <= 1.125  # within 1 + 0.5 / N
    assert f"  python benchmarks/autoscaling.py --limit 10 --ttft 3 --rate-scale {found['rate_scale']} " \
           "--static-from 4" in out
    # at a scale of 2 or more the copies' bursts are named, with what to try
    assert out[-2].startswith(f"note: at --rate-scale {found['rate_scale']} each request is emitted 2 or 3 times")
    assert "shape_copies=once" in out[-2] and "autoscaling_window_needs.py" in out[-2]
    assert "--copies shuffled spreads" in out[-2]
    note = sys.modules["autoscaling_find_scale"].copies_note  # (imported by the benchmark, from its folder)
    assert "dealt over the slots" in note(3.0, "shuffled") and "spreads" not in note(3.0, "shuffled")
    assert "one more stream of the trace's own arrivals" in note(3.0, "shifted")
    assert "shape_copies" not in note(3.0, "shifted") and "dealt" not in note(3.0, "shifted")
    # from above the edge it halves down to it
    assert bench.main(["--find-scale", "4", "--rate-scale", "20", "--limit", "10"]) == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["find_scale"]
    assert found["rate_scale"] <= 3.0 < found["above"] and found["above"] / found["rate_scale"] <= 1.125


def test_find_scale_that_never_reaches_the_target_says_what_to_change(monkeypatch):
    monkeypatch.setattr(bench, "run", lambda args, policy, n, settings=None, outcomes=None, stop_below=None:
                        {"slo_attainment": 0.5, "num_requests": 10, "wall_s": 0.0})
    with pytest.raises(SystemExit, match=r"--find-scale 2: static x2 missed SLO attainment 0.99 at every rate "
                                         r"scale tried .*loosen --ttft / --tpot"):
        bench.main(["--find-scale", "2", "--limit", "10"])


def test_find_scale_on_a_small_real_replay_and_the_command_it_prints(capsys, tmp_path):
    argv = ["--limit", "300", "--cold-start", "5", "--progress", "0"]
    assert bench.main(["--find-scale", "2", *argv]) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    found = json.loads(out[-1])["find_scale"]
    # the scale above was stopped once it could not reach the target: the most it could have reached
    assert found["slo_attainment"] >= 0.99 > float(found["above_slo_attainment"].removeprefix("<="))
    assert found["rate_scale"] < found["above"]
    assert f"at --rate-scale {found['above']}: SLO {found['above_slo_attainment']}" in captured.err
    assert "misses >" in captured.err and "allowed" in captured.err
    nxt = out[-2].split()[2:]  # the command it prints, run: its static x2 is the replay the search ended on
    assert nxt == [*argv, "--rate-scale", str(found["rate_scale"]), "--static-from", "2"]
    assert bench.main([*nxt, "--policies", "hpa", "--out", str(tmp_path / "runs.jsonl")]) == 0
    rows = {r["policy"]: r for r in map(json.loads, (tmp_path / "runs.jsonl").read_text().splitlines())}
    assert rows["static x2"]["slo_attainment"] == found["slo_attainment"]


def test_a_window_past_the_traces_end_says_so_instead_of_a_traceback():
    with pytest.raises(SystemExit, match=r"no request of .*AzureLLMInferenceTrace_code.csv was replayed with "
                                         r"--window-start 999999: the window is in seconds from the trace's first"):
        bench.main(["--window-start", "999999", "--policies", "hpa", "--no-static", "--progress", "0"])


def test_allowed_misses_is_the_most_that_still_rounds_to_the_target():
    from autoscaling_early_stop import allowed_misses

    for n, target in [(200, 0.99), (10001, 0.99), (30000, 0.99), (7, 0.99), (1000, 0.5), (50, 1.0)]:
        m = allowed_misses(n, target)
        assert m == -1 or round((n - m) / n, 4) >= target
        assert m + 1 > n or round((n - m - 1) / n, 4) < target
    assert allowed_misses(200, 0.99) == 2 and allowed_misses(30000, 0.99) == 301  # 29,699 / 30,000 rounds to 0.99
    assert allowed_misses(50, 1.0) == 0 and allowed_misses(7, 0.99) == 0


def test_a_window_without_arrivals_says_so_with_the_early_stop_on(capsys):
    # the early stop counts the window's requests first: none was a ZeroDivisionError before the run's own message
    assert allowed_misses_of(0) == 0
    args = bench.parser().parse_args(["--window-start", "100000", "--progress", "0", "--static-from", "2"])
    with pytest.raises(SystemExit, match="no request of .* was replayed with --window-start 100000"):
        bench.static_search(args)


def allowed_misses_of(n: int) -> int:
    from autoscaling_early_stop import allowed_misses

    return allowed_misses(n, 0.99)


def test_the_miss_counter_agrees_with_the_runs_own_attainment():
    # every request the counter calls a miss is one the run's summary does not count as attained
    from autoscaling_early_stop import MissCounter

    from sim.replay import TraceTransforms, replay
    from sim.traces.bundled import bundled_trace_path

    config = bench.load_config(None, {**{k: v for k, v in bench.base_config(
        bench.parser().parse_args([])).items() if k != "seed"}, "seed": 0})
    counter = MissCounter(lambda r: bench.meets_slo(r, config.slo))
    s = replay(bundled_trace_path(), config, record=False, extra_plugins=[counter],
               transforms=TraceTransforms(limit=400, speed_up=6.0)).summary
    assert counter.misses > 0  # the load misses: the comparison means something
    assert counter.misses == s["num_requests"] - round(s["slo_attainment"] * s["num_requests"])


def test_a_static_count_that_cannot_reach_the_target_stops_with_the_whole_replays_answer():
    argv = ["--limit", "600", "--speed-up", "4", "--progress", "0"]
    args = bench.parser().parse_args(argv)
    whole = bench.run(args, "fixed-replicas", 1)
    stopped = bench.run(args, "fixed-replicas", 1, stop_below=0.99)
    assert whole["slo_attainment"] < 0.99 and stopped["stopped_early"] is True and stopped["slo_attainment"] is None
    assert whole["slo_attainment"] <= stopped["slo_attainment_at_most"] < 0.99
    assert stopped["num_requests"] == whole["num_requests"]  # counted before the replay, as the replay reads them
    assert stopped["arrived_when_stopped"] < whole["num_requests"]  # stopped before its last arrival
    assert stopped["misses_when_stopped"] > stopped["misses_allowed"]  # checked every 256 arrivals
    met = bench.run(args, "fixed-replicas", 4, stop_below=0.25)  # a count that reaches the target: the whole run
    assert met["slo_attainment"] >= 0.25 and met == {**bench.run(args, "fixed-replicas", 4), "wall_s": met["wall_s"]}


def test_the_static_search_stops_counts_below_the_fewest_and_says_so(capsys):
    # at this load static x4 reaches 0.99 and x1-x3 miss it (0.19, 0.47, 0.88 replayed whole)
    argv = ["--limit", "600", "--progress", "0", "--policies", "hpa", "--max-replicas", "5"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    peak = result["static_peak"]
    assert peak["met_target"] and peak["replicas"] == 4 and "stopped_early" not in peak
    for n in (1, 2, 3):
        assert "not run to the end (stopped early at " in next(line for line in out.splitlines() if line.startswith(f"static x{n} "))
    assert "--no-early-stop replays it whole" in out
    assert bench.main([*argv, "--no-early-stop"]) == 0
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert whole["static_peak"] == peak  # static peak is replayed whole either way
    assert whole["hpa"] == result["hpa"]


def test_copies_reach_the_replays_transforms_and_the_out_line(tmp_path):
    args = bench.parser().parse_args(["--rate-scale", "3", "--copies", "shuffled", "--out", str(tmp_path / "o.jsonl")])
    assert bench.transforms_of(args).copies == "shuffled"
    assert bench.transforms_of(bench.parser().parse_args(["--rate-scale", "3"])).copies is None  # clumped
    bench.record(args, "slo-planner", {"slo_attainment": 1.0})
    assert json.loads((tmp_path / "o.jsonl").read_text())["copies"] == "shuffled"
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--copies", "spread"])


def test_a_configs_scaling_rules_do_not_clamp_the_static_baselines(capsys, tmp_path):
    """A --config with `scaling-rules: {max_replicas: 3}` ran every static row x3..x16 on 3 replicas."""
    import yaml

    data = yaml.safe_load(bench.DEFAULT_CONFIG.read_text())
    data["plugins"]["enabled"] = ["scaling-rules", *data["plugins"]["enabled"]]
    data["plugins"].setdefault("settings", {})["scaling-rules"] = {"max_replicas": 1}
    config = tmp_path / "rules.yaml"
    config.write_text(yaml.safe_dump(data))
    args = bench.parser().parse_args(["--config", str(config), "--limit", "100", "--progress", "0"])
    static = bench.run(args, "fixed-replicas", 3)
    assert static["scale_events"] == 0  # (it was scaled down to the rules' bound at its first tick)
    assert bench.main(["--config", str(config), "--limit", "50", "--policies", "hpa", "--no-static",
                       "--progress", "0"]) == 0
    assert "note: --config enables scaling-rules; the benchmark replays without it" in capsys.readouterr().err


def test_the_benchmark_counts_the_end_to_end_target_as_the_summary_does(tmp_path):
    """With `slo.e2e_s: 1.0` and --warmup 0, slo_attainment read 0.7247 and slo_after_warmup 1.0."""
    import yaml

    data = yaml.safe_load(bench.DEFAULT_CONFIG.read_text())
    data["slo"] = {**data.get("slo", {}), "e2e_s": 1.0}
    config = tmp_path / "e2e.yaml"
    config.write_text(yaml.safe_dump(data))
    args = bench.parser().parse_args(["--config", str(config), "--limit", "150", "--warmup", "0", "--progress", "0"])
    row = bench.run(args, "fixed-replicas", 1)
    assert row["slo_attainment"] < 1 and row["slo_after_warmup"] == row["slo_attainment"]


def test_the_replica_options_are_explained_and_a_runs_peak_is_named_as_one(capsys, tmp_path):
    """--start-replicas and --max-replicas had no --help text; --out's `max_replicas` held the peak count."""
    help_text = " ".join(bench.parser().format_help().split())
    assert "--start-replicas START_REPLICAS replicas each autoscaler starts from" in help_text
    assert "--max-replicas MAX_REPLICAS each autoscaler's bound" in help_text
    out = tmp_path / "runs.jsonl"
    assert bench.main(["--limit", "50", "--policies", "hpa", "--no-static", "--progress", "0", "--out", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert row["peak_replicas"] >= 1 and "max_replicas" not in row
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hpa"]) == {
        "slo_attainment", "gpu_hours", "scale_events", "oscillations", "reversals", "cost_per_1k_requests", "slo_after_warmup",
        "plugin_errors"}


def test_a_trace_read_in_the_wrong_format_is_one_line_exit_2():
    # `--format mooncake` on the bundled CSV: that was a raw TraceFormatError traceback; `controlplane sim replay`
    # says it in one line and exits 2 (the reader says the file is CSV and mooncake a JSON Lines format)
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "autoscaling.py"), "--limit", "20",
                           "--format", "mooncake", "--policies", "hpa", "--no-static"],
                          capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert err[-1].startswith("autoscaling.py: error: ") and "AzureLLMInferenceTrace_code.csv:1: a CSV file" in err[-1]


def test_a_suite_without_the_mooncake_trace_says_where_to_get_it(capsys, tmp_path):
    """(A clone has no ../shared: the skip named only the missing path.)"""
    assert bench.main(["--suite", "--setups", "mooncake-conv x1", "--mooncake", str(tmp_path / "none.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "# mooncake-conv x1: skipped, no Mooncake trace at" in out
    assert "github.com/kvcache-ai/Mooncake" in out and "give --mooncake PATH" in out


def test_reversals_count_down_then_up_within_the_window():
    """slo-planner released a replica at 883 s and started one at 889 s: `oscillations` (up then down) missed it."""
    events = [(0.0, 1, 3), (883.0, 3, 2), (889.0, 2, 3), (1000.0, 3, 1), (1400.0, 1, 2)]
    assert bench.reversals(events, 300.0) == 1 and bench.reversals(events, 500.0) == 2
    assert bench.oscillations(events, 300.0) == 1  # kept as defined: only the up at 889 s then the down at 1000 s


def test_table_rows_say_stopped_early_and_print_none_as_a_dash():
    """Stopped rows read '<=0.9746' beside '<=0.8953' as if attainments (the true x4 was 0.8287); a short window's
    'SLO warm' printed None."""
    cols = ("slo_attainment", "slo_after_warmup", "gpu_hours")
    row = bench.table_row("hpa", {"slo_attainment": 0.99, "slo_after_warmup": None, "gpu_hours": 1.5}, cols)
    assert "None" not in row and row.split() == ["hpa", "0.99", "-", "1.5"]
    stopped = {"stopped_early": True, "slo_attainment": None, "slo_attainment_at_most": 0.9746,
               "stopped_at_sim_s": 312.0, "wall_s": 0.4}
    assert bench.table_row("static x4", stopped, cols) == (
        "static x4                 not run to the end (stopped early at 312 s simulated: SLO <= 0.9746, below --target)")


@pytest.mark.parametrize(("options", "message"), [
    (["--limit", "0"], "argument --limit: must be an integer >= 1, got '0'"),  # (was "no request ... the window")
    (["--format", "nope"], "unknown trace format 'nope'; valid formats: azure, mooncake"),
    (["--trace", "/nonexistent/t.csv"], "trace file not found: /nonexistent/t.csv"),
])
def test_a_usage_error_is_one_line_without_the_usage_block(monkeypatch, capsys, options, message):
    monkeypatch.setattr(bench, "run", never_called)
    with pytest.raises(SystemExit) as exited:
        bench.main([*options, "--policies", "hpa", "--no-static"])
    err = capsys.readouterr().err
    lines = err.splitlines()  # (argparse put its 17-line usage block before the error)
    assert exited.value.code == 2 and len(lines) == 1 and f": error: {message}" in lines[0], err


def test_a_readers_warning_is_shown_once_per_run_of_the_benchmark(tmp_path, caplog):
    """A Bailian file read as mooncake: the reader warns at each read, and the benchmark read it once or twice per
    replay (35 times for every policy and the static search)."""
    import logging

    trace = tmp_path / "bailian.jsonl"
    trace.write_text("".join(json.dumps({"chat_id": i, "parent_chat_id": -1, "timestamp": 0.5 * i, "input_length": 200,
                                         "output_length": 20, "type": "text", "turn": 1, "hash_ids": [1]}) + "\n"
                             for i in range(40)))
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        assert bench.main(["--trace", str(trace), "--format", "mooncake", "--policies", "hpa,kpa", "--max-replicas",
                           "2", "--progress", "0"]) == 0
    assert sum("Bailian's key" in r.getMessage() for r in caplog.records) == 1
    from sim.traces import read_trace

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sim.traces"):  # outside the benchmark, each read warns as before
        for _ in range(2):
            list(read_trace(trace, "mooncake", spread="none"))
    assert sum("Bailian's key" in r.getMessage() for r in caplog.records) == 2


def test_a_trace_one_replica_serves_says_no_autoscaler_can_save_on_it(capsys, tmp_path):
    """static_peak x1: every autoscaler can only tie or spend more, and nothing said so."""
    trace = tmp_path / "sparse.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                     + "".join(f"r{i},{10.0 * i},200,20\n" for i in range(30)))
    assert bench.main(["--trace", str(trace), "--policies", "hpa", "--max-replicas", "2", "--progress", "0"]) == 0
    out = capsys.readouterr().out
    peak = json.loads(out.strip().splitlines()[-1])["static_peak"]
    assert peak["replicas"] == 1 and peak["met_target"] and peak["one_replica_suffices"] is True
    note = next(line for line in out.splitlines() if line.startswith("note: static_peak is 1 replica"))
    assert "--find-scale N" in note
