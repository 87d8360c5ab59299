"""A run cut short (``--until``, a Ctrl-C) replayed fewer requests than its trace holds: `runs compare` said
nothing of it beside a whole-trace run (while it flagged ``--limit``), and `runs show`/`runs list` did not
say where it stopped."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.runs_notes import stopped_early
from controlplane.testing import make_config, make_trace


def _text(*args: str) -> str:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: the whole trace (30 s of arrivals); run 2: stopped at 10 s; run 3: an --until past its end."""
    from sim.replay import replay

    url = f"sqlite:///{tmp_path_factory.mktemp('stopped') / 'runs.db'}"
    trace = make_trace(60, qps=2)
    for sim in ({}, {"until_s": 10.0}, {"until_s": 100000.0}):
        replay(trace, make_config(storage={"url": url}, sim=sim))
    return url


def test_compare_says_a_run_stopped_at_until_replayed_different_requests(runs):
    text = _text("runs", "compare", "1", "2", "--no-ci", "--db", runs)
    assert "note: the runs replayed different requests" in text and "run 2: - (until=10 s)" in text
    # an --until the run never reached cut nothing: the same requests, no note
    assert "different requests" not in _text("runs", "compare", "1", "3", "--no-ci", "--db", runs)


def test_show_and_list_say_where_the_run_stopped(runs):
    assert "stopped at --until: simulated second 10 (requests arriving later were not replayed" in _text(
        "runs", "show", "2", "--db", runs)
    assert "stopped at" not in _text("runs", "show", "3", "--db", runs)
    listed = _text("runs", "list", "--db", runs)
    assert "finished (until=10 s)" in listed and "until=100000" not in listed


def test_an_interrupted_run_counts_as_stopped_where_it_was_interrupted():
    run = {"id": 4, "config": {"sim": {"until_s": None}}, "summary": {"interrupted_at_s": 412.5, "sim_end_s": 412.5}}
    assert stopped_early(run) == "interrupted at 412.5 s"
    assert stopped_early({"id": 5, "config": {}, "summary": {"sim_end_s": 30.0}}) is None


def test_one_request_cut_off_is_said_in_the_singular():
    from controlplane.cli.runs_notes import stopped_line

    def line(n):
        return stopped_line({"summary": {"num_in_flight": n},
                             "config": {"sim": {"until_s": 60.0}}, "id": 1})

    one, two = line(1), line(2)
    assert "1 request in flight was cut off" in one and "2 requests in flight were cut off" in two


def test_a_run_stopped_by_sigterm_is_not_said_to_be_stopped_by_ctrl_c():
    """The replay said 'interrupted by SIGTERM' and its summary held interrupted_by SIGTERM; runs show said Ctrl-C."""
    from controlplane.cli.runs_notes import stopped_line

    def line(**by):
        return stopped_line({"id": 1, "config": {}, "summary": {"interrupted_at_s": 646.0, "sim_end_s": 646.0, **by}})

    assert line(interrupted_by="SIGTERM").startswith("stopped by SIGTERM at simulated second 646 ")
    assert line(interrupted_by="SIGINT").startswith("stopped by Ctrl-C at simulated second 646 ")
    assert line().startswith("stopped by Ctrl-C")  # (a run stored before the signal was recorded)
