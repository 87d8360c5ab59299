"""benchmarks/batching_routing.py ends with one JSON line: each policy with the keys the checks read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.fixtures.benchmarks import never_called, refusal

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("batching_routing_benchmark", ROOT / "benchmarks" / "batching_routing.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

KEYS = {"throughput_rps", "ttft_p50_s", "ttft_p90_s", "e2e_p99_s", "prefix_hit_rate", "num_lost"}


def test_every_policy_has_the_keys_and_loses_nothing(capsys):
    bench.main(["--requests", "150", "--qps", "6", "--tenants", "8", "--system-prompt-tokens", "1024"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = set(result)
    for part in ("continuous", "dynamic", "least-loaded", "prefix-only", "weighted"):
        assert any(part in n for n in names), part
    for name, row in result.items():
        assert KEYS <= set(row), name
        assert row["num_lost"] == 0 and row["num_duplicated"] == 0, name
        assert row["num_completed"] + row["num_rejected"] == 150, name
    assert result["weighted"]["prefix_hit_rate"] > 0


def test_a_trace_file_and_bad_policies(capsys, tmp_path):
    bench.main(["--trace", "bundled:azure_code", "--limit", "120", "--policies", "continuous-batching,dynamic-batching"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"continuous-batching", "dynamic-batching"}
    with pytest.raises(SystemExit):
        bench.main(["--policies", "nope"])
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--trace", str(tmp_path / "missing.csv")])
    assert exit_.value.code == 2 and "no such file" in capsys.readouterr().err


def test_the_continuous_policy_flag_gives_the_vllm_style_row(capsys):
    """docs/batching-routing.md's Azure table has a vLLM-style row no flag could reproduce."""
    args = ["--trace", "bundled:azure_code", "--limit", "200", "--policies", "continuous-batching"]
    bench.main(args)
    sarathi = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["continuous-batching"]
    bench.main([*args, "--continuous-policy", "vllm"])
    vllm = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["continuous-batching"]
    assert vllm["num_completed"] == sarathi["num_completed"] == 200
    assert vllm["ttft_p50_s"] != sarathi["ttft_p50_s"]  # (vLLM prefills first: its own latencies)


@pytest.mark.parametrize(("argv", "option"), [
    (["--requests", "0"], "--requests"),  # (were ValueErrors of SharedPrefixWorkload naming num_requests...)
    (["--tenants", "0"], "--tenants"),
    (["--qps", "-1"], "--qps"),
    (["--system-prompt-tokens", "0"], "--system-prompt-tokens"),
    (["--trace", "bundled:nope"], "--trace"),  # (a ValueError traceback)
    (["--replicas", "0", "--requests", "10", "--policies", "round-robin"], "--replicas"),  # (ran, all lost)
    (["--limit", "10"], "--limit"),  # (ignored without --trace)
    (["--trace", "bundled:azure_code", "--limit", "0"], "--limit"),
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_policy", never_called)
    assert option in refusal(bench, argv, capsys)



class _Stop(Exception):
    """Raised in place of the first replay, once its preset is known."""


def _presets_used(monkeypatch, argv: list[str]) -> list[str]:
    used: list[str] = []

    def record(trace, policy, preset, *rest):
        used.append(preset)
        raise _Stop

    monkeypatch.setattr(bench, "run_policy", record)
    with pytest.raises(_Stop):
        bench.main([*argv, "--policies", "round-robin"])
    return used


@pytest.mark.parametrize(("argv", "preset"), [
    ([], "70b-h100x4"),  # (the format detected: was 8b-a100, the default only applied to --format mooncake)
    (["--format", "mooncake"], "70b-h100x4"),
    (["--preset", "7b-a100"], "7b-a100"),
])
def test_a_mooncake_trace_gets_the_mooncake_preset_given_or_detected(argv, preset, tmp_path, monkeypatch):
    trace = tmp_path / "conversation_trace.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 3000 * i, "input_length": 600, "output_length": 20,
                                         "hash_ids": [0, i + 1]}) + "\n" for i in range(4)))
    assert _presets_used(monkeypatch, ["--trace", str(trace), *argv]) == [preset]


def test_a_trace_of_another_format_gets_the_8b_preset(monkeypatch):
    assert _presets_used(monkeypatch, ["--trace", "bundled:azure_code", "--limit", "5"]) == ["8b-a100"]


def test_the_throughput_is_the_runs_own_span_whatever_the_control_tick():
    # (it was the run summary's: completed over a span ending at the first tick after the last finish,
    # so with ticks of 10 s 3,000 requests could only read 13.636, 12.5 or 12.0 req/s)
    from sim.traces.shared_prefix import SharedPrefixWorkload, shared_prefix_trace

    trace = shared_prefix_trace(SharedPrefixWorkload(num_requests=120, qps=6, num_tenants=8,
                                                     system_prompt_tokens=1024, seed=1))
    runs = {tick: bench.run_policy(trace, "round-robin", "8b-a100", 2, 2.0, 0.2, tick_s=tick) for tick in (10.0, 0.7)}
    fine, coarse = runs[0.7], runs[10.0]
    assert fine["e2e_p99_s"] == coarse["e2e_p99_s"] and fine["num_completed"] == coarse["num_completed"] == 120
    assert fine["throughput_rps"] == pytest.approx(coarse["throughput_rps"], rel=1e-9)
    assert coarse["throughput_rps"] == pytest.approx(120 / coarse["span_s"], rel=1e-4)
    assert coarse["span_s"] % 10 != pytest.approx(0, abs=1e-3)  # (not a whole number of ticks)


@pytest.mark.parametrize("spelling", ["--speed-up", "--speedup"])
def test_speed_up_is_spelt_as_the_other_benchmarks_spell_it(spelling, monkeypatch):
    # autoscaling.py and guardians.py take --speed-up; this one took only --speedup
    seen = {}

    def first_arrivals(trace, policy, *rest):
        seen.setdefault("arrivals", [r.arrival_s for r in trace[:20]])
        raise SystemExit(0)

    monkeypatch.setattr(bench, "run_policy", first_arrivals)
    args = ["--trace", "bundled:azure_code", "--limit", "20", "--policies", "continuous-batching"]
    with pytest.raises(SystemExit):
        bench.main(args)
    plain = seen.pop("arrivals")
    with pytest.raises(SystemExit):
        bench.main([*args, spelling, "4"])
    assert seen["arrivals"] == pytest.approx([t / 4 for t in plain])


def test_speed_up_without_a_trace_is_refused_under_its_new_name(capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_policy", never_called)
    assert "--speed-up applies to --trace's requests" in refusal(bench, ["--speed-up", "2"], capsys)


def test_the_documented_command_writes_the_benchmarks_default_workload(tmp_path, capsys):
    # docs/batching-routing.md gave `python -m sim.traces.shared_prefix OUT.jsonl`: 2,000 requests of 8 tenants at
    # 19.8 req/s, not the 3,000 requests of 256 tenants at 14 req/s the benchmark replays
    import re
    import shlex

    from sim.traces import read_trace
    from sim.traces.shared_prefix import main as write_workload

    doc = (ROOT / "docs" / "batching-routing.md").read_text()
    commands = re.findall(r"^python -m sim\.traces\.shared_prefix .*$", doc, flags=re.M)
    assert commands == [bench.WORKLOAD_COMMAND]
    argv = shlex.split(commands[0])[3:]
    out = tmp_path / "workload.jsonl"
    assert write_workload([str(out), *argv[1:]]) == 0
    written = list(read_trace(out))
    args = bench.build_parser().parse_args([])
    expected, _ = bench.load_workload(args)
    assert len(written) == len(expected) == 3000
    for a, b in zip(written, expected):
        assert (a.request_id, a.prompt_tokens, a.output_tokens, a.tenant, tuple(a.hash_ids)) == (
            b.request_id, b.prompt_tokens, b.output_tokens, b.tenant, tuple(b.hash_ids))
        assert a.arrival_s == pytest.approx(b.arrival_s, abs=1e-6)


def test_a_trace_without_prefix_information_has_no_prefix_hit_rate(capsys):
    """The Azure trace has no hash_ids: nothing to hit, so "-" and null, not 0.0% (was 0.0)."""
    bench.main(["--trace", "bundled:azure_code", "--limit", "60", "--policies", "weighted"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["weighted"]["prefix_hit_rate"] is None
    row = next(line for line in out if line.startswith("│ weighted"))
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[11] == "-"  # the "prefix hit" column
