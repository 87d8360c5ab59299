"""The commands' start-up: what they read of the config, and that they refuse a bad config before any database
is touched or worker started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_read_only_command_reads_only_the_storage_url_of_the_environment(tmp_path, monkeypatch):
    db = tmp_path / "base.db"
    assert _cli("sim", "replay", "--limit", "5", "--db", str(db)).exit_code == 0
    monkeypatch.setenv("CONTROLPLANE_STORAGE__URL", f"sqlite:///{db}")
    monkeypatch.setenv("CONTROLPLANE_SEED", "abc")  # a run setting: not `runs list`'s to refuse
    result = _cli("runs", "list")
    assert result.exit_code == 0, result.output
    assert "bundled-slo-planner" in result.stdout
    monkeypatch.delenv("CONTROLPLANE_STORAGE__URL")  # (the section's JSON gives it too)
    monkeypatch.setenv("CONTROLPLANE_STORAGE", f'{{"url": "{db}", "batch_size": "many"}}')
    assert _cli("runs", "list").exit_code == 0
    monkeypatch.setenv("CONTROLPLANE_STORAGE", '["not", "a", "section"]')
    result = _cli("runs", "list")
    assert result.exit_code == 2
    assert "CONTROLPLANE_STORAGE cannot be read" in result.stderr


@pytest.mark.parametrize("env", [
    {},
    {"CONTROLPLANE_STORAGE__URL": "runs.db"},
    {"controlplane_storage__url": "postgresql+psycopg://u@h/db"},
    {"CONTROLPLANE_STORAGE": '{"url": "~/x.db"}'},
    {"CONTROLPLANE_STORAGE": '{"url": "a.db"}', "CONTROLPLANE_STORAGE__URL": "b.db"},
    {"CONTROLPLANE_STORAGE": '{"batch_size": 3}'},
])
def test_the_storage_url_alone_is_what_the_whole_config_reads(env, monkeypatch):
    from controlplane.config import load_config
    from controlplane.config_env import configured_storage_url

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert configured_storage_url() == load_config().storage.url
