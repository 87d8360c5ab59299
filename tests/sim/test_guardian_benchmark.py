"""benchmarks/guardians.py: one JSON line with every variant's numbers; the synthetic workload."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from sim.traces.record import TraceRequest
from tests.fixtures.benchmarks import never_called, refusal

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("guardians_benchmark", ROOT / "benchmarks" / "guardians.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

KEYS = {"e2e_p99_s", "ttft_p99_s", "guardian_gpu_s", "harmful_caught", "served_before_verdict",
        "blocked_served_from_cache"}


def test_the_benchmark_prints_every_variant(capsys):
    assert bench.main(["--limit", "600", "--speed-up", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert set(result) == set(bench.VARIANTS)
    for row in result.values():
        assert set(row) == KEYS and row["blocked_served_from_cache"] == 0
    assert result["none"]["guardian_gpu_s"] == 0 and result["none"]["harmful_caught"] == 0
    assert result["sync-all"]["harmful_caught"] == 1.0 and result["sync-all"]["served_before_verdict"] == 0
    assert result["async-all"]["served_before_verdict"] > 0.9
    assert result["cascade"]["guardian_gpu_s"] < result["sync-all"]["guardian_gpu_s"]
    assert result["async-all"]["e2e_p99_s"] <= result["sync-all"]["e2e_p99_s"]
    # stdout is not a terminal here: the table still has one line per variant, its cells whole
    rows = {line.split("│")[1].strip(): line for line in out if line.startswith("│")}
    for v in bench.VARIANTS:
        assert f"{result[v]['guardian_gpu_s']:.1f}" in rows[v]


def test_synthetic_tenants_and_popular_prompts_keep_a_traces_own():
    args = argparse.Namespace(seed=0, tenants=4, popular=3, popular_share=0.5)
    trace = [TraceRequest(str(i), float(i), 100, 10) for i in range(400)]
    out = bench.synthetic(trace, args)
    popular = [t for t in out if t.prompt.startswith("popular")]
    assert 0.4 < len(popular) / len(out) < 0.6
    by_prompt = {}
    for t in popular:  # the same prompt is the same request: same lengths, same tenant
        by_prompt.setdefault(t.prompt, set()).add((t.prompt_tokens, t.output_tokens, t.tenant))
    assert all(len(v) == 1 for v in by_prompt.values()) and len(by_prompt) == 3
    own = bench.synthetic([TraceRequest("x", 0.0, 5, 5, tenant="acme", prompt="hi")], args)[0]
    assert (own.tenant, own.prompt) == ("acme", "hi")


def test_the_cascade_threshold_is_tuned_without_the_runs_labels():
    args = argparse.Namespace(seed=0, tenants=20, risky_tenants=2, risky_rate=0.25, harmful_rate=0.02, popular=50,
                              popular_share=0.1, judge_replicas=1, screen_separation=4.0, screen_noise=1.2, keep=0.99,
                              held_out_seeds=3)
    trace = [TraceRequest(str(i), float(i), 100, 10) for i in range(3000)]
    t, kept, escalated = bench.tune_threshold(trace, args)
    assert kept >= 0.99 and 0 < escalated < 0.5 and 0 < t < 0.5
    # the run's own labels (seed 0) are not what it was tuned on: another seed gives another threshold
    assert bench.tune_threshold(trace, argparse.Namespace(**{**vars(args), "seed": 5}))[0] != t


@pytest.mark.parametrize(("argv", "option"), [
    (["--limit", "0", "--variants", "none"], "--limit"),  # (was an IndexError tuning the cascade)
    (["--limit", "50", "--held-out-seeds", "0", "--variants", "cascade"], "--held-out-seeds"),  # (IndexError)
    (["--limit", "50", "--replicas", "0", "--variants", "none"], "--replicas"),  # (TypeError formatting None)
    (["--budget", "1.5", "--variants", "uniform"], "--budget"),  # (plugins.settings.sampled-guardian.rate)
    (["--budget", "0", "--variants", "risk"], "--budget"),
    (["--judge-replicas", "0", "--variants", "sync-all"], "--judge-replicas"),  # (guardians.models.0.replicas)
    (["--keep", "0", "--variants", "cascade"], "--keep"),
    (["--trace", "/nonexistent/trace.csv"], "--trace"),
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure", never_called)
    assert option in refusal(bench, argv, capsys)


def test_the_cascade_is_tuned_only_when_it_is_replayed(capsys, monkeypatch):
    monkeypatch.setattr(bench, "tune_threshold", never_called)
    assert bench.main(["--limit", "20", "--variants", "none"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {"none"}


def test_async_all_cache_hits_of_passed_answers_were_served_after_a_verdict(capsys, monkeypatch):
    """Under async-all a verdict comes after its reply, and the response cache stores an answer
    only once it passed: every cache hit had a verdict (was 100% "served before verdict": only
    verdicts known at the reply counted)."""
    measured = []
    measure = bench.measure
    monkeypatch.setattr(bench, "measure", lambda *a: measured.append(measure(*a)) or measured[-1])
    assert bench.main(["--limit", "600", "--speed-up", "2", "--variants", "async-all"]) == 0
    m = measured[0]
    served = m["_requests"] - m["_blocked"]
    assert m["_cache_hits"] > 0
    assert m["served_before_verdict"] == round((served - m["_cache_hits"]) / served, 4) < 1


def test_a_texts_first_verdict_is_when_it_came():
    done, blocked = bench.RequestStatus.COMPLETED, bench.RequestStatus.BLOCKED
    rows = [("a", done, "pending", False, "p", 1.0, None),  # async: its verdict came at 5
            ("b", done, "pass", False, "q", 2.0, None),  # sync: at its reply
            ("c", blocked, "block", False, "r", 3.0, None),
            ("d", done, "pending", False, "s", 4.0, None),  # blocked after the reply, at 6
            ("e", done, None, False, "t", 1.0, None)]  # unchecked
    verdict_at, blocked_at = bench.first_verdicts(rows, {"a": (5.0, "pass"), "d": (6.0, "block")})
    assert verdict_at == {"p": 5.0, "q": 2.0, "r": 3.0, "s": 6.0}
    assert blocked_at == {"r": 3.0, "s": 6.0}
