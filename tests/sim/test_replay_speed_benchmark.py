"""benchmarks/replay_speed.py: a bad option is one line naming it, before the first replay."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("replay_speed_benchmark", ROOT / "benchmarks" / "replay_speed.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _no_replay(*args, **kwargs):
    raise AssertionError("a bad option must be refused before any replay")


@pytest.mark.parametrize(("argv", "option"), [
    (["--repeats", "0"], "--repeats"),  # (was a StatisticsError after no replay)
    (["--db", "bogus://x"], "--db"),  # (the tracebacks below had good messages, uncaught)
    (["--config", "/nonexistent/run.yaml"], "--config"),
    (["--trace", "/nonexistent/trace.csv"], "--trace"),
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "replay", _no_replay)
    with pytest.raises(SystemExit) as exit_:
        bench.run_main(bench.main, argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert option in next(line for line in err.splitlines() if "error:" in line)
