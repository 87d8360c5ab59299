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
