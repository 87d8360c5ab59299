"""`controlplane runs list`: a crashed run's figures come from the request rows it recorded."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import RunRecorder, make_engine, upgrade
from controlplane.storage.crashed import claim_run, process_marker
from tests.storage.test_crashed import _dead_pid


def _row(i: int, status: str, e2e: float) -> dict:
    return {"request_id": f"req-{i}", "model": "m", "status": status, "arrival_s": float(i),
            "scheduled_s": i + 0.01, "first_token_s": i + 0.1, "finish_s": i + e2e, "prompt_tokens": 5,
            "output_tokens": 4}


def test_a_crashed_live_runs_completed_and_p50_are_counted_from_its_rows(tmp_path) -> None:
    """A daemon killed (kill -9) after 10 completed requests listed `completed -` and `e2e p50 -`, though
    its 10 request rows were all completed: its summary was never written."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name="daemon", mode="live", trace=None, trace_format=None, seed=0, config={},
                               plugins=[], started_at=datetime.now(timezone.utc))
        for i in range(10):
            rec.add_request(_row(i, "completed", 1.0 + i / 10))  # (e2e 1.0 ... 1.9: median 1.45)
        rec.add_request(_row(10, "failed", 9.0))
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    engine.dispose()

    res = CliRunner().invoke(app, ["runs", "list", "--db", url])  # (it marks the run crashed first)
    assert res.exit_code == 0, res.output
    [row] = [line for line in res.output.splitlines() if re.search(r"│ \d+ +│", line)]
    assert re.search(r"│ crashed +│ +- +│ 11\* +│ 10\* +│ 1\.45\* +│", row), row  # (requests marked too: --help)
    text = " ".join(res.output.split())
    assert "* a crashed run: requests, completed and e2e p50 counted from the request rows it recorded" in text


def test_a_crashed_run_without_completed_rows_has_no_p50_and_finished_runs_are_unmarked(tmp_path) -> None:
    from controlplane.testing import make_config, make_trace, replay_with

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    replay_with(trace=make_trace(3), config=make_config(storage={"url": url}), db_url=url)
    engine = make_engine(url)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name="killed", mode="sim", trace=None, trace_format=None, seed=1, config={},
                               plugins=[], started_at=datetime.now(timezone.utc))
    claim_run(engine, run_id, {**process_marker(), "pid": _dead_pid(), "start_ticks": None})
    engine.dispose()
    res = CliRunner().invoke(app, ["runs", "list", "--db", url])
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines() if re.search(r"│ \d+ +│", line)}
    assert re.search(r"│ crashed +│ +- +│ 0\* +│ 0\* +│ - +│", rows[str(run_id)]), rows[str(run_id)]
    assert "*" not in rows["1"]
