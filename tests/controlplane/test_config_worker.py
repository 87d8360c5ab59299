"""``cluster.models[].worker`` is checked by its keys in a simulated run too: a misspelt key failed only live."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.config import WorkerSection, checked_config, load_config
from controlplane.errors import ConfigError


def test_the_worker_section_takes_the_live_workers_settings():
    pytest.importorskip("torch")
    from controlplane.live.model_source import WorkerModelSettings

    assert set(WorkerSection.__annotations__) == set(WorkerModelSettings.model_fields)


def test_a_misspelt_worker_setting_is_an_error_when_the_config_loads(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("cluster: {models: [{name: a, worker: {preset: tiny-llama, precison: int8}}]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (f"invalid configuration in {path}:\n"
                              "  cluster.models.0.worker.precison: Extra inputs are not permitted")
    config = load_config(None, {"cluster": {"models": [{"worker": {"preset": "tiny-llama", "precision": "int8"}}]}})
    assert config.cluster.models[0].worker == {"preset": "tiny-llama", "precision": "int8"}  # (a plain dict)
    assert checked_config(config).model_dump()["cluster"]["models"][0]["worker"] == config.cluster.models[0].worker


def test_sim_replay_refuses_a_misspelt_worker_setting(tmp_path):
    from controlplane.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("cluster: {models: [{name: a, worker: {preset: tiny-llama, precison: int8}}]}\n")
    result = CliRunner().invoke(app, ["sim", "replay", "-c", str(path), "--limit", "3", "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2, result.output
    assert "cluster.models.0.worker.precison: Extra inputs are not permitted" in result.stderr
