"""benchmarks/vs_vidur.py: bad --runs, --anchors, --repeats are one line naming them, before any run;
--check-exact on its own; "deterministic" only when something was compared."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.benchmarks import load_benchmark, never_called

bench = load_benchmark("vs_vidur")


@pytest.mark.parametrize(("argv", "option", "says"), [
    (["--runs", "bogus"], "--runs", "code_r1_n10000_qps0.8"),  # (was a FileNotFoundError traceback)
    (["--runs", "code_r1_n10000_qps0.8"], "--runs", "other_run"),  # no such folder: the folders there
    (["--anchors", "{tmp}/nope"], "--anchors", "no such folder"),  # (FileNotFoundError traceback)
    (["--repeats", "0"], "--repeats", ">= 1"),  # (IndexError)
])
def test_a_bad_option_is_one_line_naming_it(argv, option, says, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_cli", never_called)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    (tmp_path / "other_run").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        bench.run_main(bench.main, ["--anchors", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert option in line and says in line


def test_missing_anchors_say_what_the_recorded_runs_are_and_what_to_pass(tmp_path, capsys, monkeypatch):
    """(A clone has no ../shared/anchors: the error named the folder but not what belongs in it.)"""
    monkeypatch.setattr(bench, "time_cli", never_called)
    monkeypatch.delenv("VIDUR_ANCHORS", raising=False)
    monkeypatch.setattr(bench, "DEFAULT_ANCHORS", tmp_path / "shared" / "anchors" / "vidur")
    with pytest.raises(SystemExit):
        bench.run_main(bench.main, [])
    line = next(line for line in capsys.readouterr().err.splitlines() if "error:" in line)
    assert "microsoft/vidur" in line and "workload.csv" in line and "--anchors DIR" in line


RUN = "code_r1_n10000_qps0.8"
PHASES = ("start_and_imports", "setup_imports", "setup_session", "setup_latency_models", "loop", "write", "exit")


def _fake_exact_check(run_dir, workload, n, tick_s=None) -> dict:
    pct = {"p50": 0.5, "p90": -2.0, "p99": 1.0, "max_rel_per_request": 1e-3}
    return {"n": n, "completed": (n, n), "preemptions": (0, 0), "ttft": pct, "tpot": pct, "e2e": pct,
            "batches": (n, 2 * n), "iterations": (n, n), "simpy_events": (n, n), "core_events": (n, n),
            "wall_s": (0.1, 0.2), "output_tokens_per_request": 100.0}


def _main(argv, tmp_path, monkeypatch, capsys, summaries=None) -> tuple[dict, str]:
    """``main`` on a fake anchors folder, the timed processes and the exact check faked: its JSON
    line and what it printed."""
    (tmp_path / RUN).mkdir()
    for name in ("vidur_config.json", "workload.csv"):
        (tmp_path / RUN / name).write_text("{}")
    same = {"num_requests": 10, "num_completed": 10}
    summaries = iter([same, *(summaries or [same] * 9)])  # (the first: the untimed warm-up run)

    def time_cli(cmd, cwd):
        return {"wall_s": 1.0, "cpu_s": 1.0, "startup_s": 0.1, "loop_s": 0.5, "peak_rss_mb": 100.0,
                "summary": next(summaries), "phases": dict.fromkeys(PHASES, 0.1)}

    monkeypatch.setattr(bench, "time_cli", time_cli)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    monkeypatch.setattr(bench, "anchor_settings", lambda run_dir: {})
    monkeypatch.setattr(bench, "exact_check", _fake_exact_check)
    monkeypatch.setattr(bench, "fidelity", never_called)
    assert bench.main(["--anchors", str(tmp_path), "--runs", RUN, "--no-profile", "--small", "0", "--no-fidelity",
                       *argv]) == 0
    printed = capsys.readouterr().out
    return json.loads(printed.strip().splitlines()[-1]), printed


def test_the_exact_check_runs_without_the_fidelity_replay(tmp_path, monkeypatch, capsys):
    # (--check-exact with --no-fidelity did nothing: no table, no key, no message)
    out, printed = _main(["--repeats", "1", "--check-exact", "5"], tmp_path, monkeypatch, capsys)
    assert out["exact_vs_fast_max_pct"] == 2.0
    assert "fast mode (multi-iteration decode steps) vs exact mode" in printed


def test_deterministic_is_null_when_nothing_was_compared(tmp_path, monkeypatch, capsys):
    # (one repetition and no fidelity replay said "deterministic": true)
    out, _ = _main(["--repeats", "1"], tmp_path, monkeypatch, capsys)
    assert out["deterministic"] is None and out["runs"][RUN]["deterministic"] is None
    assert "exact_vs_fast_max_pct" not in out


@pytest.mark.parametrize(("completed", "same"), [((10, 10), True), ((10, 9), False)])
def test_deterministic_compares_the_repetitions(completed, same, tmp_path, monkeypatch, capsys):
    summaries = [{"num_requests": 10, "num_completed": c} for c in completed]
    out, _ = _main(["--repeats", "2"], tmp_path, monkeypatch, capsys, summaries)
    assert out["deterministic"] is same and out["runs"][RUN]["deterministic"] is same


def test_the_cli_summary_and_the_library_replay_compare_alike(tmp_path):
    """(The CLI's --json adds the run's "status" to the summary, so every workload read "deterministic":
    false though the numbers were the same.) A real `sim replay --json` process, as the benchmark times it,
    against the in-process replay of the same trace and config."""
    import yaml

    from controlplane.config import load_config
    from sim.replay import replay
    from tests.fixtures.common import VIDUR_ANCHOR_CONFIG

    workload = tmp_path / "workload.csv"
    workload.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                        + "".join(f"{i},{0.25 * i:.3f},{100 + 37 * i},{5 + i % 7}\n" for i in range(30)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(VIDUR_ANCHOR_CONFIG))
    cli = bench.time_cli(bench.cli_command(workload, config), tmp_path)["summary"]
    library = replay(workload, load_config(config, {"storage": {"url": "sqlite://"}}), trace_format="canonical",
                     record=False).summary
    assert cli["status"] == "finished" and "status" not in library
    assert bench._comparable(cli) == bench._comparable(library)
