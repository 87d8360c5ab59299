"""benchmarks/search.py: a bad option is one line naming it, exit 2, before the search runs (not after it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.benchmarks import ROOT, load_benchmark, never_called, refusal

bench = load_benchmark("search")


@pytest.mark.parametrize(("argv", "option"), [
    (["--seeds", "0,x"], "--seeds"),  # (a ValueError after the whole search)
    (["--seeds", "0,-1"], "--seeds"),
    (["--seeds", ","], "--seeds"),
    (["--check", "-1"], "--check"),  # (replayed every rejected candidate but the last)
    (["--slo-attainment", "1.5"], "--slo-attainment"),  # ("search failed (2):" and the subcommand's usage box)
    (["--slo-attainment", "0"], "--slo-attainment"),
    (["--slo-ttft", "0"], "--slo-ttft"),
    (["--slo-tpot", "nan"], "--slo-tpot"),
    (["--backend", "threads"], "--backend"),
    (["--format", "csv"], "--format"),
    (["--spec", "{tmp}/missing.yaml"], "--spec"),
    (["--spec", str(ROOT / "README.md")], "--spec"),
    (["--trace", "{tmp}/missing.csv"], "--trace"),
])
def test_a_bad_option_is_one_line_naming_it(argv, option, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", never_called)
    assert option in refusal(bench, [a.format(tmp=tmp_path) for a in argv], capsys)


def test_the_seeds_are_integers_in_the_order_given_each_once():
    assert bench.seed_list("2, 0,2,") == [2, 0]


@pytest.mark.parametrize(("candidate", "shown"), [
    ({"attainment": 0.95951, "stopped": True, "stage": "screen"}, "<=0.9595"),  # (was 0.9595: not a measurement)
    ({"attainment": 0.875, "stopped": False, "stage": "full"}, "0.8750"),
    ({"attainment": None, "stopped": False, "stage": "screen", "error": "bad setting"}, "-"),
])
def test_an_early_stopped_candidates_attainment_is_marked_as_an_upper_bound(candidate, shown):
    assert bench.search_att(candidate) == shown


def test_the_default_trace_is_the_bundled_one_so_a_clone_runs_it(monkeypatch):
    """(It was ../shared/data/traces/..., outside the repository: a clone got '--trace ...: no such file'.)"""
    from sim.traces import bundled_trace_path

    assert bench.DEFAULT_TRACE == bundled_trace_path() and ROOT in bench.DEFAULT_TRACE.parents
    searched: list[list[str]] = []

    def search(cmd, **kwargs):
        searched.append(cmd)
        raise KeyboardInterrupt  # (stops the benchmark at the search, past every check of its options)

    monkeypatch.setattr(bench.subprocess, "run", search)
    with pytest.raises(KeyboardInterrupt):
        bench.main([])
    (cmd,) = searched
    assert cmd[cmd.index("--trace") + 1] == str(bundled_trace_path())


def test_quick_cuts_the_trace_and_each_axis_and_keeps_the_specs_files(tmp_path):
    import yaml

    from sim.sweep import load_spec

    quick = bench.quick_spec(ROOT / "examples" / "search.yaml", tmp_path)
    data = yaml.safe_load(quick.read_text())
    assert data["trace"]["limit"] == bench.QUICK_REQUESTS == 1000
    assert all(len(v) <= bench.QUICK_VALUES for v in data["space"].values())
    assert len(load_spec(quick).spec.points()) == 108  # of examples/search.yaml's 864
    spec_dir, elsewhere = tmp_path / "spec", tmp_path / "out"
    spec_dir.mkdir(), elsewhere.mkdir()
    (spec_dir / "base.yaml").write_text("seed: 3\n")
    (spec_dir / "s.yaml").write_text("config: base.yaml\ntrace: {limit: 50}\nspace:\n  cluster.models.0.replicas: [1, 2, 3, 4]\n")
    data = yaml.safe_load(bench.quick_spec(spec_dir / "s.yaml", elsewhere).read_text())
    assert data["config"] == str(spec_dir / "base.yaml")  # (relative to the spec, which the copy is not beside)
    assert data["trace"]["limit"] == 50 and data["space"]["cluster.models.0.replicas"] == [1, 2, 3]


def test_a_quick_run_says_it_is_a_smoke_run(capsys, monkeypatch):
    """The search's figures took 102-247 s to check; --quick is short and says it measures nothing."""
    import subprocess

    searched: list[list[str]] = []

    def search(cmd, **kwargs):
        searched.append(cmd)
        result = {"candidates": 108, "runs": 0, "wall_s": 0.1, "cost_unit": "usd", "stages": [], "best": None,
                  "rejected_cheaper": []}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(result) + "\n", "")

    monkeypatch.setattr(bench.subprocess, "run", search)
    assert bench.main(["--quick", "--check", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SMOKE RUN (--quick), not a measurement") and json.loads(out[-1])["quick"] is True
    assert Path(searched[0][searched[0].index("search") + 1]).name == "quick-search.yaml"
