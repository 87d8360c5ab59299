"""`controlplane sim replay` with no arguments replays the bundled trace on the bundled run config
(SLO planner, cold starts, Vidur-profiled model); a trace named without --config replays on that
config too; --config replaces it."""

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
    # a trace named without --config: the same bundled config, and the same run for the same requests
    s2 = _replay(str(bundled_trace_path()), "--format", "azure", "--window-end", "300", "--db", url)
    cfg2 = get_run(make_engine(url), s2["run_id"])["config"]
    assert cfg2["plugins"] == cfg["plugins"] and cfg2["cluster"] == cfg["cluster"]
    for key in ("num_completed", "slo_attainment", "gpu_seconds", "num_scale_events", "peak_replicas"):
        assert s2[key] == s[key], key


def test_a_config_replaces_the_bundled_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = tmp_path / "fixed.yaml"
    config.write_text("plugins: {enabled: [round-robin, continuous-batching, fixed-replicas, builtin-latency-models]}\n"
                      "cluster: {models: [{name: default, replicas: 2}]}\n")
    s = _replay(str(bundled_trace_path()), "--window-end", "300", "--config", str(config), "--db", url)
    cfg = get_run(make_engine(url), s["run_id"])["config"]
    assert "slo-planner" not in cfg["plugins"]["enabled"] and s["num_scale_events"] == 0
    assert s["peak_replicas"] == 2


def test_the_bundled_config_replays_alike_in_fast_and_exact_mode(tmp_path):
    # Its router (least-loaded by tokens) and the readiness gate must not read progress the fast
    # mode settles only at a run's end: the first 1,000 seconds, with scale-ups, cold starts and
    # scale-downs, give the same summary both ways.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    fast = _replay("--window-end", "1000", "--db", url)
    exact = _replay("--window-end", "1000", "--exact", "--db", url)
    assert fast["num_scale_events"] >= 2 and fast["num_requests"] > 1000
    for key in ("num_completed", "slo_attainment", "gpu_seconds", "num_scale_events", "peak_replicas",
                "ttft_p50_s", "ttft_p99_s", "e2e_p99_s"):
        assert fast[key] == exact[key], key
