"""benchmarks/replay_speed.py: a bad option is one line naming it, before the first replay."""

from __future__ import annotations

import pytest

from tests.fixtures.benchmarks import ROOT, load_benchmark, never_called, refusal

bench = load_benchmark("replay_speed")


@pytest.mark.parametrize(("argv", "option"), [
    (["--repeats", "0"], "--repeats"),  # (was a StatisticsError after no replay)
    (["--db", "bogus://x"], "--db"),  # (the tracebacks below had good messages, uncaught)
    (["--config", "/nonexistent/run.yaml"], "--config"),
    (["--trace", "/nonexistent/trace.csv"], "--trace"),
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "replay", never_called)
    assert option in refusal(bench, argv, capsys)
