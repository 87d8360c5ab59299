"""A section written as a scalar (or left empty) is the same error whether or not a source above the file sets a
key inside it: the merge would otherwise keep that source's keys and drop the file's value unseen."""

from __future__ import annotations

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.upper().startswith("CONTROLPLANE_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("text, overrides, env", [
    ("sim: exact\n", {"sim": {"until_s": 60}}, {}),
    ("sim: exact\n", {}, {"CONTROLPLANE_SIM__UNTIL_S": "10"}),
    ("slo: 1.0\n", {"slo": {"tpot_s": 0.5}}, {}),
    ("storage: runs.db\n", {"storage": {"url": "other.db"}}, {}),
    ("sim:\n", {"sim": {"until_s": 60}}, {}),  # an empty section
    ("plugins: {settings: {queue-limit: 5}}\n", {"plugins": {"settings": {"queue-limit": {"max_queue": 1}}}}, {}),
])
def test_a_file_value_that_is_not_a_section_is_an_error_whatever_sets_keys_inside_it(text, overrides, env, tmp_path,
                                                                                   monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as alone:
        load_config(path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as merged:
        load_config(path, overrides)
    assert str(merged.value) == str(alone.value)
    assert f"in {path}:" in str(merged.value)


def test_an_environment_section_that_is_not_a_mapping_is_an_error_under_an_option(monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_SLO", "1.0")
    with pytest.raises(ConfigError) as alone:
        load_config()
    with pytest.raises(ConfigError) as merged:
        load_config(None, {"slo": {"tpot_s": 0.5}})
    assert "slo: Input should be a valid dictionary" in str(merged.value)
    assert "(from the environment: CONTROLPLANE_SLO)" in str(merged.value)
    assert "slo: Input should be a valid dictionary" in str(alone.value)


def test_values_a_source_above_replaces_whole_stay_valid(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("cluster: {models: [{name: a}], gpu_prices: {a10g: 1.0}}\nsim: {exact: true}\n")
    monkeypatch.setenv("CONTROLPLANE_CLUSTER__GPU_PRICES__A10G", "2.0")
    config = load_config(path, {"sim": {"until_s": 5}, "cluster": {"models": [{"name": "b"}]}})
    assert config.sim.exact and config.sim.until_s == 5
    assert [m.name for m in config.cluster.models] == ["b"] and config.cluster.gpu_prices["a10g"] == 2.0


def test_the_command_line_gives_the_files_error_with_a_flag_set(tmp_path):
    from typer.testing import CliRunner

    from controlplane.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("sim: exact\n")
    db = tmp_path / "r.db"
    result = CliRunner().invoke(app, ["sim", "replay", "-c", str(path), "--until", "60", "--db", str(db),
                                      "--limit", "3"])
    assert result.exit_code == 2, result.output
    assert "sim: Input should be a valid dictionary or instance of SimConfig, got 'exact'" in result.stderr
    assert not db.exists()
