"""`controlplane sim replay` with no arguments replays the bundled trace on the bundled run config
(SLO planner, cold starts, Vidur-profiled model); with a trace or --config it does not."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import get_run, make_engine
from sim.traces import bundled_trace_path


def _replay(*args: str) -> dict:
    res = CliRunner().invoke(app, ["sim", "replay", "--json", *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_no_arguments_use_the_bundled_autoscaling_config(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    s = _replay("--window-end", "300", "--db", url)
    cfg = get_run(make_engine(url), s["run_id"])["config"]
    assert "slo-planner" in cfg["plugins"]["enabled"]
    assert cfg["cluster"]["models"][0]["latency_model"] == "vidur"
    assert s["num_scale_events"] >= 1 and s["peak_replicas"] >= 2  # it scaled for the first burst
    assert s["cost_usd"] > 0 and s["gpu_hours"] > 0 and s["cost_per_1k_requests_usd"] > 0
    # with a trace named, the built-in defaults apply (fixed replicas), as before
    s2 = _replay(str(bundled_trace_path()), "--format", "azure", "--window-end", "300", "--db", url)
    cfg2 = get_run(make_engine(url), s2["run_id"])["config"]
    assert "slo-planner" not in cfg2["plugins"]["enabled"] and s2["num_scale_events"] == 0
