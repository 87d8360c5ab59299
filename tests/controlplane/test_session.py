"""`controlplane.session`: what the run row keeps of the run, the latency models plugins register."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.errors import ConfigError


def test_the_stored_config_hides_the_database_password():
    from controlplane.session import stored_config
    from controlplane.testing import make_config

    config = make_config(storage={"url": "postgresql+psycopg://runs:s3cret@db.internal:5432/runs"})
    stored = stored_config(config)
    assert stored["storage"]["url"] == "postgresql+psycopg://runs:***@db.internal:5432/runs"
    assert "s3cret" not in str(stored) and config.storage.url.endswith(":s3cret@db.internal:5432/runs")
    assert stored_config(make_config(storage={"url": "sqlite:///runs.db"}))["storage"]["url"] == "sqlite:///runs.db"


def test_the_stored_config_hides_a_plugin_stores_redis_password():
    from controlplane.session import stored_config
    from controlplane.testing import make_config

    store = {"backend": "redis", "redis_url": "redis://:hunter2@cache:6379/0"}
    config = make_config(plugins={"enabled": ["exact-cache"], "settings": {"exact-cache": {"store": store}}})
    stored = stored_config(config)
    assert stored["plugins"]["settings"]["exact-cache"]["store"]["redis_url"] == "redis://:***@cache:6379/0"
    assert "hunter2" not in str(stored)
    assert config.plugins.settings["exact-cache"]["store"]["redis_url"] == store["redis_url"]  # (the run's own: kept)


# --- latency_factories: what plugins register ---------------------------------------------------


class NotCallableLatency(Plugin):
    """Registers a number where a factory belongs (loaded below through an entry point)."""

    name = "not-callable-latency"

    @hookimpl
    def cp_register_latency_models(self, register):
        register("slow-gpu", 4.0)


class SlowGpuLatency(Plugin):
    name = "slow-gpu-latency"

    @hookimpl
    def cp_register_latency_models(self, register):
        from sim.latency.linear import LinearLatencyModel

        register("slow-gpu", lambda: LinearLatencyModel(base_s=0.02))


class SlowGpuAgain(Plugin):
    name = "slow-gpu-again"

    @hookimpl
    def cp_register_latency_models(self, register):
        register("slow-gpu", lambda: None)


def _factories(*names: str, extra: tuple = ()) -> dict:
    from importlib import metadata

    from controlplane.plugin_manager import PluginInfo, discover_plugins
    from controlplane.session import RunSession, latency_factories
    from controlplane.testing import make_config

    available = dict(discover_plugins())
    for name, cls in (("not-callable-latency", "NotCallableLatency"), ("slow-gpu-latency", "SlowGpuLatency"),
                      ("slow-gpu-again", "SlowGpuAgain")):
        ep = metadata.EntryPoint(name, f"tests.controlplane.test_session:{cls}", "controlplane")
        available[name] = PluginInfo.from_entry_point(ep)
    config = make_config(plugins={"enabled": ["builtin-latency-models", *names]})
    session = RunSession(config, mode="sim", record=False, available=available, extra_plugins=extra)
    return latency_factories(session.plugins)


def test_plugins_register_their_latency_models():
    factories = _factories("slow-gpu-latency")
    assert {"linear", "vidur", "slow-gpu"} <= set(factories)
    from sim.latency.linear import LinearLatencyModel

    assert isinstance(factories["slow-gpu"](), LinearLatencyModel)


def test_an_entry_point_registering_a_factory_that_is_not_callable_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as exc:
        _factories("not-callable-latency")
    assert str(exc.value) == (
        "plugin 'not-callable-latency' (entry point tests.controlplane.test_session:NotCallableLatency) failed to "
        "register latency models: TypeError: latency model 'slow-gpu': the factory must be callable "
        "(a LatencyModel class or a function returning one), got float 4.0 (raised at "
        f"tests/controlplane/test_session.py:{NotCallableLatency.cp_register_latency_models.__code__.co_firstlineno + 2} "
        "in cp_register_latency_models)")  # (the plugin's line that registered it)


def test_a_latency_model_name_that_is_not_a_string_is_a_config_error():
    class Unnamed(Plugin):
        name = "unnamed-latency"

        @hookimpl
        def cp_register_latency_models(self, register):
            register(None, lambda: None)

    with pytest.raises(ConfigError, match="plugin 'unnamed-latency' failed to register latency models: TypeError: "
                                          "a latency model's name must be a non-empty string, got NoneType None"):
        _factories(extra=(Unnamed(),))


def test_a_name_registered_by_two_plugins_is_a_config_error_naming_both_entry_points():
    with pytest.raises(ConfigError) as exc:
        _factories("slow-gpu-latency", "slow-gpu-again")
    msg = str(exc.value)
    assert msg.startswith("latency model 'slow-gpu' is registered by plugins ")
    assert "'slow-gpu-latency' (entry point tests.controlplane.test_session:SlowGpuLatency)" in msg
    assert "'slow-gpu-again' (entry point tests.controlplane.test_session:SlowGpuAgain)" in msg


def test_a_built_in_name_registered_again_is_a_config_error_naming_both():
    class Shadow(Plugin):
        name = "shadow-linear"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("linear", lambda: None)

    with pytest.raises(ConfigError, match=r"latency model 'linear' is registered by plugins 'shadow-linear' and "
                                          r"'builtin-latency-models' \(entry point sim\.latency\.plugin:"):
        _factories(extra=(Shadow(),))


def test_a_name_registered_twice_by_one_plugin_is_a_config_error():
    class Twice(Plugin):
        name = "twice"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("mine", lambda: None)
            register("mine", lambda: None)

    with pytest.raises(ConfigError, match="latency model 'mine' is registered by plugin 'twice' and again by it"):
        _factories(extra=(Twice(),))


def test_a_close_whose_rows_were_spilled_raises_with_the_runs_summary(tmp_path):
    """The database took none of the run's last rows (they went to a spill file): the error the
    close raises carries the run's whole summary, for the command to print all the same."""
    from controlplane.config import RunConfig
    from controlplane.session import RunSession
    from controlplane.storage.errors import StorageError

    class Spilling:
        def finish_run(self, run_id, **values):
            return False

        def close(self):
            raise StorageError("3 rows could not be written", spill_path=tmp_path / "spill.jsonl")

    session = RunSession(RunConfig(), mode="sim", record=False)
    session.recorder, session.run.run_id = Spilling(), 7
    with pytest.raises(StorageError) as info:
        session.close({"num_requests": 3})
    assert info.value.summary["num_requests"] == 3 and info.value.summary["run_id"] == 7
    assert info.value.spill_path == tmp_path / "spill.jsonl"


@pytest.mark.parametrize("plugins", [
    {"settings": {"queue-limit": {"max_queud": 1}}},  # a misspelt setting
    {"enabled": ["queue-limit", "least-loadd", "continuous-batching", "fixed-replicas"]},  # an unknown plugin
])
def test_a_library_replay_refuses_bad_plugins_before_it_opens_the_database(tmp_path, plugins):
    """`sim.replay.replay` of a config with a bad plugin setting left a new SQLite file (with its -wal and -shm)
    of 0 runs behind, or upgraded a PostgreSQL schema, before the error."""
    from controlplane.errors import ConfigError
    from controlplane.testing import make_config, make_trace
    from sim.replay import replay

    path = tmp_path / "new.db"
    config = make_config(storage={"url": f"sqlite:///{path}"}, plugins=plugins)
    with pytest.raises(ConfigError):
        replay(make_trace(5), config)
    assert list(tmp_path.iterdir()) == []
