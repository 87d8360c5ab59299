"""`controlplane live-replay` says "run N recorded in URL" only once the run is recorded, as the daemon
does: it said so in its banner, and then a guardian that could not start ended the command (rc 2) with
nothing recorded."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import build_app
from sim.traces.canonical import write_canonical
from sim.traces.record import TraceRequest

TINY = {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}


def _run(tmp_path, guardians):
    trace = tmp_path / "trace.csv"
    write_canonical([TraceRequest(f"t{i}", 0.05 * i, 12, 2) for i in range(2)], trace)
    config = tmp_path / "live.yaml"
    config.write_text(json.dumps({"storage": {"url": f"sqlite:///{tmp_path / 'runs.db'}"},
                                  "cluster": {"models": [{"name": "tiny", "replicas": 1, "worker": TINY}]},
                                  "guardians": {"models": guardians}}))
    return CliRunner().invoke(build_app(), ["live-replay", str(trace), "--pool", "thread", "--config", str(config)])


def test_a_run_that_fails_to_start_is_not_said_to_be_recorded(tmp_path):
    res = _run(tmp_path, [{"name": "judge", "kind": "causal-lm", "model": str(tmp_path / "missing")}])
    assert res.exit_code == 2 and "guardians.models[judge].model: cannot load" in " ".join(res.output.split())
    assert "live replay: 2 requests" in res.output and "recorded in" not in res.output, res.output


def test_a_started_run_is_said_to_be_recorded_before_its_summary(tmp_path):
    res = _run(tmp_path, [{"name": "rules", "kind": "rules", "patterns": ["bomb"]}])
    assert res.exit_code == 0, res.output
    said = res.output.index(f"run 1 recorded in sqlite:///{tmp_path / 'runs.db'}")
    assert said < res.output.index("stored in")
