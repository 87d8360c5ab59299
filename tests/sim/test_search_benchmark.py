"""benchmarks/search.py: a bad option is one line naming it, exit 2, before the search runs (not after it)."""

from __future__ import annotations

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
