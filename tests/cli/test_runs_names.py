"""`controlplane runs list / show / sweeps` print what users wrote (run names, traces, errors) as written:
a run named ``[/]`` made `runs list` fail with rich's MarkupError for everyone sharing the database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.testing import make_config, make_trace, replay_with


@pytest.mark.parametrize("name", ["[/]", "[bold red]markup[/]", "cluster.models[default]"])
def test_a_run_name_is_printed_literally(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    replay_with(trace=make_trace(3), config=make_config(name=name, storage={"url": url}), db_url=url)
    for command in (["runs", "list"], ["runs", "show", "1"]):
        res = CliRunner().invoke(app, [*command, "--db", url])
        assert res.exit_code == 0, res.output
        assert name in res.output


def test_runs_sweeps_without_any_prints_no_empty_table_and_full_needs_the_timeline(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    replay_with(trace=make_trace(3), config=make_config(storage={"url": url}), db_url=url)
    res = CliRunner().invoke(app, ["runs", "sweeps", "--db", url])
    assert res.exit_code == 0 and res.output.strip() == "no sweeps or searches stored"
    res = CliRunner().invoke(app, ["runs", "show", "1", "--full", "--db", url])
    assert res.exit_code == 2 and "--full goes with --timeline" in " ".join(res.output.split())


def test_compare_says_when_the_runs_replayed_different_requests(tmp_path):
    """`runs compare 1 2` of the bundled replay and a 600 s window at twice the speed printed -83% requests and
    'B higher' verdicts without saying the workloads differed."""
    from sim.replay import TraceTransforms, replay

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = make_trace(60, qps=2)
    for transforms in (TraceTransforms(), TraceTransforms(limit=30)):
        replay(trace, make_config(storage={"url": url}), transforms=transforms)
    text = " ".join(CliRunner().invoke(app, ["runs", "compare", "1", "2", "--no-ci", "--db", url]).output.split())
    assert "note: the runs replayed different requests" in text and "run 2: - (limit=30)" in text
    same = " ".join(CliRunner().invoke(app, ["runs", "compare", "1", "1", "--no-ci", "--db", url]).output.split())
    assert "different requests" not in same


def test_a_crashed_daemon_run_tells_answered_requests_from_ones_safe_to_retry():
    """`requests_lost` now counts only requests never answered; those answered but not recorded must not be
    retried (their clients have their answers)."""
    from datetime import datetime

    from controlplane.cli.runs import _crashed

    line = _crashed({"finished_at": datetime(2026, 12, 6, 12), "summary": {
        "crashed": True, "requests_recorded": 50, "requests_accepted": 70, "requests_answered_unrecorded": 6,
        "requests_lost": 14, "lost_request_ids": ["req-3", "req-9"], "lost_request_ids_truncated": True}})
    assert ("70 accepted, 6 answered and not recorded (their clients have their answers: not to retry), "
            "14 never answered (safe to retry) (req-3, req-9, ...)") in line
