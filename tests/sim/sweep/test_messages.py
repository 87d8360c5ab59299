"""A sweep's runs' warnings are said once by the driver, with how many runs said them (`sim.sweep.messages`):
from a pool's workers they were printed onto the driver's progress bar, once per run."""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import pytest

from sim.sweep import load_spec, run_sweep
from sim.sweep.messages import kept_messages, said_once, say_repeats, skipped_rows

CONTEXT = "requests were longer (prompt + output tokens) than the 4,096-token context window"
# The bundled trace on examples/cluster.yaml's model: 49 of its first 300 requests are past the model's context.
SPEC = {"name": "ctx", "config": "examples/cluster.yaml", "trace": {"format": "azure", "limit": 300}, "seeds": [0],
        "record": "summary", "space": {"cluster.models.0.replicas": [2, 4, 6]}}


@pytest.mark.parametrize("backend", ["serial", "pool"])
def test_a_warning_every_run_gives_is_said_once_with_how_many_runs_gave_it(tmp_path, monkeypatch, caplog, capfd,
                                                                          backend):
    from pathlib import Path

    import controlplane

    monkeypatch.chdir(Path(controlplane.__file__).parent.parent)  # (the spec names examples/cluster.yaml)
    root = logging.getLogger()  # (pytest's own handlers only: an earlier test's handler on a closed stream printed
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers  # "--- Logging error ---" with the message)
                                           if type(h).__module__.startswith("_pytest")])
    with caplog.at_level(logging.WARNING):
        result = run_sweep(load_spec(data=SPEC), f"sqlite:///{tmp_path / 'runs.db'}", backend=backend, workers=2)
    assert result.ran == 3
    said = [r.getMessage() for r in caplog.records if CONTEXT in r.getMessage()]
    assert len(said) == 2 and said[0].startswith("49 " + CONTEXT), said
    assert said[1].startswith("3 runs warned the same: 49 requests were longer"), said
    assert CONTEXT not in capfd.readouterr().err  # (nothing printed by the runs themselves, in any process)


def test_kept_messages_keeps_logs_and_warnings_and_gives_the_handlers_back():
    root = logging.getLogger()
    before = root.handlers[:]
    with kept_messages() as kept:
        logging.getLogger("sim.x").warning("a %s", "log")
        logging.getLogger("sim.x").info("not kept")
        warnings.warn("a warning", RuntimeWarning, stacklevel=1)
    assert kept == ["a log", "a warning"] and root.handlers == before


def test_said_once_counts_runs_not_repeats_within_one(caplog):
    class Outcome:
        def __init__(self, *messages: str) -> None:
            self.messages = list(messages)

    seen: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING):
        assert len(list(said_once([Outcome("x", "x"), Outcome("x", "y"), Outcome()], seen))) == 3
        say_repeats(seen)
    assert [r.getMessage() for r in caplog.records] == ["x", "y", "2 runs warned the same: x"]


LONG = "30 requests were longer (prompt + output tokens) than the 4,096-token context window of the model " * 3


def test_the_summary_line_is_whole_where_stderr_is_no_terminal(caplog, monkeypatch):
    """A CI log (stderr a file) had the line cut with "…" at 114 characters: a log file has no width."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    with caplog.at_level(logging.WARNING):
        say_repeats(Counter({LONG: 2}))
    assert [r.getMessage() for r in caplog.records] == [f"2 runs warned the same: {LONG}"]


def test_the_summary_line_is_cut_to_the_terminal_s_width_on_a_terminal(caplog, monkeypatch):
    import os
    import sys

    import io

    class Tty(io.StringIO):  # (a stream: a handler an earlier test left on sys.stderr may write to it)
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a, **k: os.terminal_size((80, 24)))
    with caplog.at_level(logging.WARNING):
        say_repeats(Counter({LONG: 2, "short": 3}))
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"2 runs warned the same: {LONG}"[:79] + "…", "3 runs warned the same: short"], said


def test_the_bad_trace_rows_on_error_skip_skipped_are_said_once(tmp_path, monkeypatch, caplog):
    """A sweep over a trace read with ``on_error: skip`` printed its table only, where `controlplane sim replay` warns
    of the rows skipped (the driver reads the trace: no run said it); now said as a run's warnings are."""
    from pathlib import Path

    import controlplane

    monkeypatch.chdir(Path(controlplane.__file__).parent.parent)  # (the spec names examples/cluster.yaml)
    trace = tmp_path / "bad.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                     + "".join(f"r{i},{i * 0.1:.1f},{'abc' if i == 3 else 100},10\n" for i in range(20)))
    spec = {"name": "skip", "config": "examples/cluster.yaml", "trace": {"path": str(trace),
            "options": {"on_error": "skip"}}, "seeds": [0], "record": "summary", "space": {"trace.speed_up": [1, 2]}}
    with caplog.at_level(logging.WARNING):
        result = run_sweep(load_spec(data=spec), f"sqlite:///{tmp_path / 'runs.db'}", backend="serial")
    assert result.ran == 2
    said = [r.getMessage() for r in caplog.records if "bad trace row" in r.getMessage()]
    assert said == [f"1 bad trace row skipped (on_error: skip), not replayed; the first: {trace}:5: field "
                    "'prompt_tokens': expected a non-negative integer, got 'abc'",
                    f"2 runs warned the same: {said[0]}"], said  # (whole: stderr is no terminal here)


def test_skipped_rows_says_how_many_and_the_first_errors():
    assert skipped_rows({}) == [] and skipped_rows({"trace_rows_left_out": {"failed": 3}}) == []
    left_out = {"trace_rows_left_out": {"bad rows skipped": 1200}, "trace_bad_rows": ["t.csv:2: x", "t.csv:9: y"]}
    assert skipped_rows(left_out) == ["1,200 bad trace rows skipped (on_error: skip), not replayed; the first: "
                                      "t.csv:2: x; t.csv:9: y"]
