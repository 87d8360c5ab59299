"""benchmarks/million.py: a bad option is one line naming it, before the timed run."""

from __future__ import annotations

import pytest

from tests.fixtures.benchmarks import ROOT, load_benchmark, never_called, refusal

bench = load_benchmark("million")


@pytest.mark.parametrize(("argv", "option"), [
    (["--requests", "0", "--profile-requests", "0"], "--requests"),  # (was a ZeroDivisionError)
    (["--qps-per-replica", "0"], "--qps-per-replica"),  # (ZeroDivisionError)
    (["--per-copy", "-5"], "--per-copy"),  # (the CLI's "--rate-scale must be ...": an option not given)
    (["--profile-requests", "-1"], "--profile-requests"),
    (["--trace", "/nonexistent/trace.csv"], "--trace"),  # (a FileNotFoundError traceback)
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_cli", never_called)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    line = refusal(bench, argv, capsys)
    assert option in line and "--rate-scale" not in line


def test_a_relative_trace_path_is_passed_on_resolved(tmp_path, monkeypatch):
    # the timed command runs in a temporary folder: a relative --trace named nothing there ("trace file not found")
    (tmp_path / "t.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\nr0,0.5,10,2\nr1,1.5,10,2\n")
    monkeypatch.chdir(tmp_path)
    seen = []

    def timed(cmd, cwd):
        seen.append(cmd)
        raise KeyboardInterrupt  # stop before the database is read

    monkeypatch.setattr(bench, "time_cli", timed)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--requests", "10", "--trace", "t.csv", "--format", "canonical", "--profile-requests", "0"])
    trace = seen[0][seen[0].index("replay") + 1]
    assert trace == str(tmp_path / "t.csv")


def test_the_titles_scale_says_it_is_the_rate_scale_two_percent_over():
    """200,000 of the bundled 8,819 requests: the title read a bare x23.13 where 200,000 / 8,819 is 22.68."""
    assert bench.scale_label(200_000 / 8_819 * 1.02, 200_000, 8_819) == (
        "x23.13 (--rate-scale: 200,000 / 8,819 requests + 2%, cut by --limit)")
