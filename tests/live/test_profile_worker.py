"""`controlplane profile --config DAEMON.yaml --model NAME` (controlplane.cli.profile_worker): a worker built from a
``worker.config`` is profiled as the daemon builds it and labelled as its live run records it, so `calibrate
--profile` takes the grid for that run."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from controlplane.cli import bench
from tests.live.conftest import record_timed_live_runs

QWEN = {"name": "q", "replicas": 1, "worker": {
    "config": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512},
    "device": "cpu", "max_seq_len": 320}}
TINY = {"name": "t", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}


def _profile(*args):
    return CliRunner().invoke(bench.app, ["profile", "--threads", "1", "--grid", "small", "--repeats", "1",
                                          "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def daemon_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "daemon.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"models": [QWEN, TINY]}}))
    return path


def test_a_config_built_worker_is_profiled_under_the_name_its_live_run_records(daemon_yaml, tmp_path):
    grid = tmp_path / "grid.json"
    res = _profile("--config", daemon_yaml, "--model", "q", "-o", grid)
    assert res.exit_code == 0, res.output
    doc = json.loads(grid.read_text())
    assert doc["model"] == "qwen2-custom" and doc["device"] == "cpu" and doc["precision"] == "fp32"
    # a live run of the same deployment, calibrated on the grid (a grid of the saved model's directory was
    # 'qwen-dir', and calibrate refused it for the run's 'qwen2-custom')
    url = f"sqlite:///{tmp_path / 'live.db'}"
    ((run_id, _),) = record_timed_live_runs(url, 1, models=[QWEN])
    out = tmp_path / "calibrated.json"
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--profile", str(grid),
                                         "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["model"] == "qwen2-custom"


def test_the_worker_options_override_the_configs_and_a_choice_is_asked_for(daemon_yaml, tmp_path):
    res = _profile("--config", daemon_yaml, "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "serves 2 models (q, t): choose one with --model" in res.output
    res = _profile("--config", daemon_yaml, "--model", "nope", "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "--model 'nope'" in res.output and "q, t" in res.output
    res = _profile("--model", "q", "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "give the config (--config)" in res.output
    res = _profile("--config", daemon_yaml, "--model", "t", "--preset", "small-llama", "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "not both" in res.output
    res = _profile("--config", daemon_yaml, "--model", "t", "--precision", "fp64", "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "--precision" in res.output
    out = tmp_path / "t.json"
    res = _profile("--config", daemon_yaml, "--model", "t", "--precision", "bf16", "-o", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["model"] == "tiny-llama" and doc["precision"] == "bf16"
