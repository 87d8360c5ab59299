"""benchmarks/bench_cli.py: the benchmarks' option types and the one-line error of a user's bad input."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from controlplane.errors import ConfigError
from sim.traces.errors import TraceFormatError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_cli", ROOT / "benchmarks" / "bench_cli.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


@pytest.mark.parametrize(("kind", "text"), [
    ("positive_int", "0"), ("positive_int", "1.5"), ("nonnegative_int", "-1"), ("positive_float", "0"),
    ("positive_float", "inf"), ("nonnegative_float", "nan"), ("share", "0"), ("share", "1.5"), ("fraction", "-0.1"),
])
def test_an_option_type_refuses_a_value_out_of_its_range(kind, text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace(".", r"\.")):
        getattr(cli, kind)(text)


def test_an_option_type_keeps_a_good_value():
    assert (cli.positive_int("3"), cli.nonnegative_int("0"), cli.share("1"), cli.fraction("0")) == (3, 0, 1.0, 0.0)


def _raising(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize(("exc", "line"), [
    (ConfigError("invalid configuration:\n  guardians.models.0.replicas: too small"),
     "bench.py: error: invalid configuration: guardians.models.0.replicas: too small"),
    (TraceFormatError("t.csv", 3, "arrival_s", "not a number"), "bench.py: error: t.csv:3: field 'arrival_s': not a number"),
    (FileNotFoundError(2, "No such file or directory", "/nope/x.csv"),
     "bench.py: error: /nope/x.csv: No such file or directory"),
    (FileNotFoundError("trace file not found: x.csv"), "bench.py: error: trace file not found: x.csv"),
])
def test_a_users_bad_input_is_one_line_and_exit_status_2(exc, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run_main(_raising(exc), [], prog="bench.py")
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize("exc", [KeyError("x"), ZeroDivisionError(), BrokenPipeError()])
def test_a_bug_stays_a_traceback(exc):
    with pytest.raises(type(exc)):
        cli.run_main(_raising(exc), [], prog="bench.py")


def test_the_exit_status_is_mains():
    for returned, code in ((None, 0), (0, 0), (3, 3)):
        with pytest.raises(SystemExit) as exit_:
            cli.run_main(lambda argv, r=returned: r, [])
        assert exit_.value.code == code
