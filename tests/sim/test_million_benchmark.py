"""benchmarks/million.py: a bad option is one line naming it, before the timed run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("million_benchmark", ROOT / "benchmarks" / "million.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _no_run(*args, **kwargs):
    raise AssertionError("a bad option must be refused before the timed run")


@pytest.mark.parametrize(("argv", "option"), [
    (["--requests", "0", "--profile-requests", "0"], "--requests"),  # (was a ZeroDivisionError)
    (["--qps-per-replica", "0"], "--qps-per-replica"),  # (ZeroDivisionError)
    (["--per-copy", "-5"], "--per-copy"),  # (the CLI's "--rate-scale must be ...": an option not given)
    (["--profile-requests", "-1"], "--profile-requests"),
    (["--trace", "/nonexistent/trace.csv"], "--trace"),  # (a FileNotFoundError traceback)
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "time_cli", _no_run)
    monkeypatch.setattr(bench, "yardstick_us", lambda: 29.5)
    with pytest.raises(SystemExit) as exit_:
        bench.run_main(bench.main, argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and "--rate-scale" not in err
    assert option in next(line for line in err.splitlines() if "error:" in line)
