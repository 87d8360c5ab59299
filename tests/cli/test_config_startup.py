"""The commands' start-up: what they read of the config, and that they refuse a bad config before any database
is touched or worker started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

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


def _yaml(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, error", [
    ("plugins: {settings: {queue-limit: {max_queud: 1}}}\n", "plugins.settings.queue-limit.max_queud: Extra inputs"),
    ("plugins: {enabled: [queue-limit, least-loaded, continuous-batching, fixed-replicas, builtin-latency-models, "
     "nope]}\n", "plugins.enabled: unknown plugin(s) 'nope'"),
    ("plugins: {settings: {hpa: {target: 1}}}\n", "settings given for plugin(s) not enabled: 'hpa'"),
    ("cluster: {models: [{name: a, latency_model: vidurr}]}\n", "unknown latency model 'vidurr'"),
    ("cluster: {models: [{name: a, latency_model: vidur, latency: {model: meta-llama/Llama-2-7b-hf, gpu: a100, "
     "tensor_parallel: 1, attention: scaledd}}]}\n", "attention must be 'profile' or 'scaled', got 'scaledd'"),
])
def test_sim_replay_refuses_a_bad_plugin_or_latency_setting_before_the_database_is_made(text, error, tmp_path):
    db = tmp_path / "new.db"
    result = _cli("sim", "replay", "-c", str(_yaml(tmp_path, text)), "--db", str(db), "--limit", "5")
    assert result.exit_code == 2, result.output
    assert error in result.stderr
    assert not list(tmp_path.glob("new.db*"))  # (no file, no -wal, no -shm: nothing touched it)


@pytest.mark.postgres
def test_a_refused_config_leaves_a_postgresql_database_without_a_schema(tmp_path, pg_url):  # noqa: F811
    from sqlalchemy import create_engine, inspect

    result = _cli("sim", "replay", "-c", str(_yaml(tmp_path, "plugins: {settings: {queue-limit: {max_queud: 1}}}\n")),
                  "--db", pg_url, "--limit", "5")
    assert result.exit_code == 2 and "max_queud" in result.stderr
    engine = create_engine(pg_url)
    try:
        assert inspect(engine).get_table_names() == []  # (not created, nor upgraded)
    finally:
        engine.dispose()


def test_live_replay_refuses_a_bad_plugin_setting_before_its_banner_and_any_worker(tmp_path):
    db = tmp_path / "r4.db"
    result = _cli("live-replay", "-c", str(_yaml(tmp_path, "plugins: {settings: {queue-limit: {max_queud: 1}}}\n")),
                  "--db", str(db), "--limit", "2", "--pool", "thread")
    assert result.exit_code == 2, result.output
    assert "plugins.settings.queue-limit.max_queud: Extra inputs are not permitted" in result.stderr
    assert "run recorded in" not in result.stderr and not list(tmp_path.glob("r4.db*"))


def test_a_latency_models_default_tensor_parallel_must_be_the_replicas_gpus(tmp_path):
    deployment = "{name: default, replicas: 2, latency_model: vidur, latency: {model: meta-llama/Llama-2-7b-hf, " \
                 "gpu: a100, attention: scaled%s}%s}"
    db = tmp_path / "r.db"
    result = _cli("sim", "replay", "-c", str(_yaml(tmp_path, f"cluster: {{models: [{deployment % ('', '')}]}}\n")),
                  "--db", str(db), "--limit", "5")
    assert result.exit_code == 2, result.output
    assert ("cluster.models[default]: the default tensor_parallel of latency model 'vidur' (2) and gpus_per_replica "
            "(1) disagree") in result.stderr
    assert not db.exists()
    for given in ((", tensor_parallel: 2", ""), ("", ", gpus_per_replica: 2")):  # either number, given once
        result = _cli("sim", "replay", "-c", str(_yaml(tmp_path, f"cluster: {{models: [{deployment % given}]}}\n")),
                      "--db", str(db), "--limit", "5", "--json")
        assert result.exit_code == 0, result.output
        import json

        assert json.loads(result.stdout)["gpu_seconds_by_gpu"]["a100-80gb"] > 0


def test_a_model_without_room_for_one_requests_kv_cache_is_refused_before_the_run(tmp_path):
    text = ("cluster: {models: [{name: a, replicas: 1, latency_model: roofline, latency: {model: "
            "meta-llama/Llama-2-70b-hf, gpu: a100-80gb, tensor_parallel: 2}, gpu: a100-80gb}]}\n"
            "plugins: {settings: {static-memory: {memory_fraction: 0.8}}}\n")
    result = _cli("sim", "replay", "-c", str(_yaml(tmp_path, text)), "--db", str(tmp_path / "r.db"), "--limit", "5")
    assert result.exit_code == 2, result.output
    assert "cluster.models.0: meta-llama/Llama-2-70b-hf does not fit on a100-80gb with tensor_parallel=2" in result.stderr
    assert "give more gpus_per_replica" in result.stderr


def test_plugins_the_allow_list_leaves_out_are_warned_of_and_not_stored_as_enabled(tmp_path, monkeypatch):
    import json
    import sqlite3

    monkeypatch.setenv("CONTROLPLANE_LOAD_PLUGINS", "queue-limit,least-loaded,continuous-batching,fixed-replicas,"
                                                    "builtin-latency-models")
    db = tmp_path / "lp.db"
    result = _cli("sim", "replay", "--db", str(db), "--limit", "20", "--json")
    assert result.exit_code == 0, result.output
    assert ("CONTROLPLANE_LOAD_PLUGINS='queue-limit,least-loaded,continuous-batching,fixed-replicas,"
            "builtin-latency-models' leaves out exact-cache, slo-planner, static-memory, sampled-guardian of "
            "plugins.enabled") in result.stderr
    with sqlite3.connect(db) as conn:
        config = json.loads(conn.execute("SELECT config FROM run").fetchone()[0])
    assert config["plugins"]["enabled"] == ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                                            "builtin-latency-models"]
    assert set(config["plugins"]["settings"]) == {"continuous-batching", "least-loaded"}  # (slo-planner's: not run)
