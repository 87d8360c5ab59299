"""Run configuration: files, environment, overrides, and errors that name the key or the file."""

from __future__ import annotations

import json
import re

import pytest

from controlplane.config import DEFAULT_PLUGINS, FALLBACK_PLUGINS, RunConfig, load_config, read_config_file
from controlplane.errors import ConfigError
from controlplane.plugin_manager import discover_plugins
from controlplane.testing import make_config

SAME_CONFIG = {
    "yaml": "seed: 5\nsim:\n  tick_s: 2.5\n  exact: true\ncluster:\n  models:\n    - {name: chat, replicas: 3}\n",
    "toml": 'seed = 5\n[sim]\ntick_s = 2.5\nexact = true\n[[cluster.models]]\nname = "chat"\nreplicas = 3\n',
    "json": json.dumps({"seed": 5, "sim": {"tick_s": 2.5, "exact": True},
                        "cluster": {"models": [{"name": "chat", "replicas": 3}]}}),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in ("CONTROLPLANE_SEED", "CONTROLPLANE_SIM__TICK_S", "CONTROLPLANE_SIM__EXACT", "CONTROLPLANE_NAME"):
        monkeypatch.delenv(key, raising=False)


def test_defaults():
    c = load_config()
    assert c.seed == 0 and c.name is None
    assert c.plugins.enabled == list(DEFAULT_PLUGINS) and c.plugins.settings == {}
    assert [(m.name, m.replicas) for m in c.cluster.models] == [("default", 2)]
    assert (c.control.tick_s, c.sim.exact, c.sim.until_s) == (1.0, False, None)
    assert c.storage.url == "sqlite:///controlplane.db"


def test_every_fallback_is_an_installed_builtin_enabled_by_default():
    installed = discover_plugins()
    for hook, name in FALLBACK_PLUGINS.items():
        assert name in DEFAULT_PLUGINS and hook in installed[name].hooks


@pytest.mark.parametrize("suffix", ["yaml", "toml", "json"])
def test_yaml_toml_and_json_files_give_the_same_config(tmp_path, suffix):
    path = tmp_path / f"run.{suffix}"
    path.write_text(SAME_CONFIG[suffix])
    c = load_config(path)
    assert (c.seed, c.control.tick_s, c.sim.exact) == (5, 2.5, True)
    assert [(m.name, m.replicas, m.max_num_seqs) for m in c.cluster.models] == [("chat", 3, 128)]
    assert c.cluster.deployment("chat") is c.cluster.models[0]
    assert c.cluster.deployment(None) is c.cluster.models[0]
    assert c.cluster.deployment("other") is None


def test_an_empty_file_gives_the_defaults_and_is_warned_of_naming_it(tmp_path):
    """`: > empty.yaml; sim replay --config empty.yaml` (a `runs config 7 > run7.yaml` that failed) ran the library's
    defaults silently: it is warned of, naming the file; -c /dev/null asks for the defaults without a warning."""
    import warnings

    from controlplane.config_files import EmptyConfigWarning

    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.toml").write_text("# seed = 3\n")
    for name, what in (("empty.yaml", "empty"), ("comments.toml", "only comments")):
        with pytest.warns(EmptyConfigWarning, match=re.escape(f"config file {tmp_path / name} is {what}: the run goes "
                                                              "with the library's defaults")):
            assert load_config(tmp_path / name) == RunConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config("/dev/null") == RunConfig()
        (tmp_path / "braces.yaml").write_text("{}\n")  # (an empty mapping, written: the defaults, asked for)
        assert load_config(tmp_path / "braces.yaml") == RunConfig()


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 5\nsim: {tick_s: 2.5, exact: true}\n")
    monkeypatch.setenv("CONTROLPLANE_SEED", "9")
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "0.5")
    c = load_config(path)
    assert (c.seed, c.control.tick_s, c.sim.exact) == (9, 0.5, True)  # exact: still from the file


def test_explicit_overrides_win_over_environment_and_file(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 5\nsim: {tick_s: 2.5, exact: true}\n")
    monkeypatch.setenv("CONTROLPLANE_SEED", "9")
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "0.5")
    c = load_config(path, {"seed": 11, "sim": {"tick_s": 4.0}})
    assert (c.seed, c.control.tick_s, c.sim.exact) == (11, 4.0, True)


def test_an_override_of_a_section_keeps_its_other_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sim: {tick_s: 2.5, exact: true}\nstorage: {url: 'sqlite:///a.db', batch_size: 10}\n")
    c = load_config(path, {"sim": {"until_s": 30.0}, "storage": {"url": "sqlite:///b.db"}})
    assert (c.control.tick_s, c.sim.exact, c.sim.until_s) == (2.5, True, 30.0)
    assert (c.storage.url, c.storage.batch_size) == ("sqlite:///b.db", 10)


def test_overriding_one_key_of_a_section_keeps_the_environment_above_the_file(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("sim: {tick_s: 2.5}\n")
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "0.5")
    c = load_config(path, {"sim": {"exact": True}})  # e.g. `--exact` on the command line
    assert (c.control.tick_s, c.sim.exact) == (0.5, True)


@pytest.mark.parametrize("name, value, expected", [
    ("CONTROLPLANE_SEED", "abc", "seed: Input should be a valid integer, unable to parse string as an integer, "
                                 "got 'abc' (from the environment: CONTROLPLANE_SEED)"),
    ("CONTROLPLANE_SIM__TICK_Z", "1", "sim.tick_z: Extra inputs are not permitted (from the environment: "
                                      "CONTROLPLANE_SIM__TICK_Z)"),
    ("CONTROLPLANE_CLUSTER__MODELS", '[{"name": "default"', "the environment variable CONTROLPLANE_CLUSTER__MODELS "
                                                            "cannot be read (a section's variable holds JSON): "
                                                            "Expecting ',' delimiter"),
])
def test_a_bad_environment_variable_is_named_not_blamed_on_the_file(tmp_path, monkeypatch, name, value, expected):
    """It said "invalid configuration in run.yaml" of a file that was fine, or named no variable at all."""
    path = tmp_path / "run.yaml"
    path.write_text("seed: 5\n")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert expected in str(exc.value) and "run.yaml" not in str(exc.value)


@pytest.mark.parametrize("name, value", [
    ("CONTROLPLANE_PLUGINS__SETTINGS", '{"queue-limit": {"max_queued": "x"}}'),
    ("CONTROLPLANE_PLUGINS", '{"settings": {"queue-limit": {"max_queued": "x"}}}'),
])
def test_a_bad_plugin_setting_from_the_environment_names_its_variable(tmp_path, monkeypatch, name, value):
    """Plugin settings are checked when the plugins are made, after the config: the error named the key only, and
    the file it pointed to held a good value."""
    from controlplane.errors import SettingsError
    from controlplane.session import RunSession

    path = tmp_path / "run.yaml"
    path.write_text("plugins: {settings: {queue-limit: {max_queued: 5}}}\n")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as exc:
        RunSession(load_config(path), mode="sim", record=False)
    assert str(exc.value).splitlines()[1:] == [
        "  plugins.settings.queue-limit.max_queued: Input should be a valid integer, unable to parse string as an "
        f"integer, got 'x' (from the environment: {name})"]
    # a variable that sets other plugins' settings is not blamed for the file's bad value
    path.write_text("plugins: {settings: {queue-limit: {max_queued: x}}}\n")
    monkeypatch.setenv(name, value.replace('"queue-limit": {"max_queued": "x"}', '"exact-cache": {"capacity": 5}'))
    with pytest.raises(SettingsError) as exc:
        RunSession(load_config(path), mode="sim", record=False)
    assert "plugins.settings.queue-limit.max_queued: Input should be a valid integer" in str(exc.value)
    assert "environment" not in str(exc.value)


def test_environment_alone_merges_with_overrides(monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "0.5")
    c = load_config(None, {"sim": {"exact": True}})
    assert (c.control.tick_s, c.sim.exact) == (0.5, True)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus: 1\n", "bogus"),
        ("sim: {tick_z: 1}\n", "sim.tick_z"),
        ("cluster: {models: [{name: a, replica: 1}]}\n", "cluster.models.0.replica"),
        ("plugins: {enable: [least-loaded]}\n", "plugins.enable"),
    ],
)
def test_unknown_keys_in_a_file_name_the_key_and_the_file(tmp_path, text, key):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"{key}: Extra inputs are not permitted" in str(exc.value)
    assert str(path) in str(exc.value)


def test_unknown_keys_in_overrides_and_environment_name_the_key(monkeypatch):
    with pytest.raises(ConfigError, match=r"slo\.ttft: Extra inputs"):
        load_config(None, {"slo": {"ttft": 1.0}})
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_Z", "1")
    with pytest.raises(ConfigError, match=r"sim\.tick_z: Extra inputs"):
        load_config()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"control": {"tick_s": 0}}, "control.tick_s"),
        ({"sim": {"guardian_block_rate": 2}}, "sim.guardian_block_rate"),
        ({"cluster": {"models": [{"replicas": -1}]}}, "cluster.models.0.replicas"),
        ({"seed": "abc"}, "seed"),
        ({"seed": -1}, "seed"),  # numpy takes no negative seed
        ({"seed": 2**64}, "seed"),  # nor can SQL store it
    ],
)
def test_invalid_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert str(exc.value).startswith(f"invalid configuration:\n  {key}: ")


def test_an_invalid_override_is_not_blamed_on_the_file(tmp_path):
    """`sim replay --until -1` said 'invalid configuration in .../default_replay.yaml', a file the user never wrote."""
    path = tmp_path / "run.yaml"
    path.write_text("control: {tick_s: 2}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, {"sim": {"until_s": -1}})
    assert str(exc.value) == ("invalid configuration:\n  sim.until_s: Input should be greater than 0, got -1 (given as an "
                              f"option or override, not in {path})")
    path.write_text("control: {tick_s: 0}\n")  # the file's own bad value: named with the file, as before
    with pytest.raises(ConfigError) as exc:
        load_config(path, {"sim": {"until_s": 5}})
    assert str(exc.value) == f"invalid configuration in {path}:\n  control.tick_s: Input should be greater than 0, got 0"


def test_invalid_environment_value_names_the_key(monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_SEED", "many")
    with pytest.raises(ConfigError, match=r"seed: Input should be a valid integer"):
        load_config()


def test_model_names_must_be_unique_and_present():
    with pytest.raises(ConfigError, match="model names must be unique"):
        make_config(cluster={"models": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="at least one model"):
        make_config(cluster={"models": []})


@pytest.mark.parametrize("name, key", [('""', "cluster.models.0.name"), ("' '", "cluster.models.1.name")])
def test_an_empty_model_name_is_refused_naming_its_key(tmp_path, name, key):
    """`name: ""` was accepted (a daemon's worker `-0`, a replay's model no request names); --model-name "" was not."""
    path = tmp_path / "run.yaml"
    first = "    - name: a\n" if key.endswith("1.name") else ""
    path.write_text(f"cluster:\n  models:\n{first}    - name: {name}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = repr(name.strip("'\""))
    assert f"in {path}:\n  {key}: a model needs a name (the one requests ask for), got {got}" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        ("bad.yaml", "sim: [unclosed\n", "not valid yaml"),
        ("bad.toml", "[sim\ntick_s = 1\n", "not valid toml"),
        ("bad.json", '{"sim": {"tick_s": 1,}}', "not valid json"),
        ("bad.yml", "sim:\n  tick_s: 1\n   exact: true\n", "not valid yml"),
    ],
)
def test_a_malformed_file_names_the_file(tmp_path, name, text, what):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: {what}")


def test_a_file_that_is_not_a_mapping_or_missing_names_the_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- seed\n- 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: the top level must be a mapping")):
        read_config_file(path)
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)


def test_plugin_settings_travel_through_the_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("plugins:\n  settings:\n    continuous-batching: {policy: sarathi}\n")
    c = load_config(path)
    assert c.plugins.settings == {"continuous-batching": {"policy": "sarathi"}}
    assert c.plugins.enabled == list(DEFAULT_PLUGINS)


def test_two_loads_do_not_leak_file_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 42\n")
    assert load_config(path).seed == 42
    assert load_config().seed == 0


def test_tick_and_metrics_interval_moved_to_control_and_the_old_names_still_work():
    from controlplane.config import RunConfig

    old = RunConfig(sim={"tick_s": 2.5, "metrics_interval_s": 10, "exact": True})
    assert (old.control.tick_s, old.control.metrics_interval_s, old.sim.exact) == (2.5, 10, True)
    assert RunConfig(control={"tick_s": 0.5}).control.tick_s == 0.5
    with pytest.raises(ValueError, match=r"sim.tick_s \(2.5\) and control.tick_s \(1.0\) disagree"):
        RunConfig(sim={"tick_s": 2.5}, control={"tick_s": 1.0})


# Without a CONTROLPLANE_<field> variable, RunConfig merges its sources itself (pydantic-settings is
# not imported); with one, a pydantic-settings twin of it does. Both must give the same config, the
# same fields set and the same errors. CONTROLPLANE_SEEDS is such a variable that pydantic-settings
# itself ignores (no field of that name): it only switches the way.
_MERGE_CASES = [
    ({}, {}),
    ({"seed": 3}, {}),
    ({"SEED": 3, "seed": 4}, {}),
    ({"Seed": 3}, {"seed": 7}),
    ({}, {"seed": 5, "sim": {"tick_s": 2.5, "exact": True}}),
    ({"sim": {"tick_s": 4.0}}, {"seed": 5, "sim": {"tick_s": 2.5, "exact": True}}),
    ({"storage": {"url": "sqlite://"}}, {"storage": {"batch_size": 7}, "plugins": {"enabled": ["round-robin"]}}),
    ({"plugins": {"settings": {"x": {"a": [1, 2]}}}}, {"plugins": {"settings": {"x": {"b": 1}, "y": {}}}}),
    ({"cluster": {"models": [{"name": "a"}, {"name": "b", "replicas": 1}]}}, {"cluster": {"max_retries": 1}}),
    ({"storage": {"url": "sqlite://", "batch_size": 9}}, {}),
    ({"name": "run", "seed": 1}, {"name": "file"}),
    ({"sim": {"bogus": 1}}, {}),
    ({"bogus": 1}, {}),
    ({"seed": "many"}, {}),
    ({}, {"slo": {"ttft_s": -1}}),
    ({}, {"sim": {"tick_s": 1.0}, "control": {"tick_s": 2.0}}),
]


def _by_both_ways(monkeypatch, tmp_path, overrides, file_values):
    from controlplane import config as config_module

    path = tmp_path / "run.json"
    path.write_text(json.dumps(file_values))
    out = []
    for env in (False, True):
        if env:
            monkeypatch.setenv("CONTROLPLANE_SEEDS", "1")
        else:
            monkeypatch.delenv("CONTROLPLANE_SEEDS", raising=False)
        assert config_module._settings_read_env() is env
        try:
            made = load_config(path, overrides)
        except ConfigError as exc:
            out.append(("error", str(exc)))
            continue
        assert type(made) is RunConfig
        out.append((made, made.model_dump(), made.model_fields_set,
                    {k: getattr(made, k).model_fields_set for k in RunConfig.model_fields
                     if hasattr(getattr(made, k), "model_fields_set")}))
    return out


@pytest.mark.parametrize(("overrides", "file_values"), _MERGE_CASES)
def test_the_config_is_the_same_with_and_without_pydantic_settings(monkeypatch, tmp_path, overrides, file_values):
    for key in [k for k in __import__("os").environ if k.lower().startswith("controlplane_")]:
        monkeypatch.delenv(key)
    plain, twin = _by_both_ways(monkeypatch, tmp_path, overrides, file_values)
    assert plain == twin


def test_a_model_in_the_overrides_is_dumped_as_pydantic_settings_does(monkeypatch, tmp_path):
    from controlplane.config import StorageConfig

    for key in [k for k in __import__("os").environ if k.lower().startswith("controlplane_")]:
        monkeypatch.delenv(key)
    listed = [1, 2]
    plain, twin = _by_both_ways(monkeypatch, tmp_path, {"storage": StorageConfig(url="sqlite://"),
                                                       "plugins": {"settings": {"x": {"a": listed}}}}, {})
    assert plain == twin
    assert plain[0].plugins.settings["x"]["a"] == listed
    assert plain[0].plugins.settings["x"]["a"] is not listed  # dumped: not the caller's list


def test_a_replay_config_does_not_import_pydantic_settings(tmp_path):
    import subprocess
    import sys

    code = ("import os, sys\n"
            "for k in [k for k in os.environ if k.lower().startswith('controlplane_')]: del os.environ[k]\n"
            "from controlplane.config import load_config\n"
            f"load_config({str(tmp_path / 'run.yaml')!r}, {{'seed': 3}})\n"
            "print('pydantic_settings' in sys.modules)\n"
            "os.environ['CONTROLPLANE_SEED'] = '4'\n"
            f"print(load_config({str(tmp_path / 'run.yaml')!r}).seed, 'pydantic_settings' in sys.modules)\n")
    (tmp_path / "run.yaml").write_text("seed: 2\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "4", "True"]


@pytest.mark.parametrize(("text", "env", "tick"), [
    ("control: {tick_s: 1.0}\n", {"CONTROLPLANE_SIM__TICK_S": "1.0"}, 1.0),  # README's example: the same, as text
    ("control: {tick_s: 1.0}\n", {"CONTROLPLANE_SIM__TICK_S": "3"}, 3.0),  # the environment beats the file
    ("sim: {tick_s: 2}\n", {"CONTROLPLANE_CONTROL__TICK_S": "0.5"}, 0.5),  # the old name in the file, new in env
    ("sim: {tick_s: 2}\ncontrol: {tick_s: 2.0}\n", {}, 2.0),  # both names in one file: compared as numbers
    ("", {"CONTROLPLANE_SIM__TICK_S": "1", "CONTROLPLANE_CONTROL__TICK_S": "1.0"}, 1.0),
])
def test_an_old_name_takes_its_sources_precedence(tmp_path, monkeypatch, text, env, tick):
    """`CONTROLPLANE_SIM__TICK_S=1.0 ... -c examples/cluster.yaml` failed: "sim.tick_s and control.tick_s disagree"
    of the environment's "1.0" and the file's 1.0, blamed on an option, under an empty key."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_config(path).control.tick_s == tick
    assert load_config(path, {"sim": {"tick_s": 7}}).control.tick_s == 7.0  # options beat both


def test_old_and_new_names_that_disagree_in_one_source_name_that_source(tmp_path, monkeypatch):
    path = tmp_path / "both.yaml"
    path.write_text("sim: {tick_s: 1.0}\ncontrol: {tick_s: 2.0}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (f"invalid configuration in {path}:\n  sim.tick_s (1.0) and control.tick_s (2.0) "
                              "disagree; sim.tick_s is the old name of control.tick_s: give one")
    with pytest.raises(ConfigError, match=r"disagree \(given as options or overrides\)") as exc:
        load_config(None, {"sim": {"tick_s": 1}, "control": {"tick_s": 2}})
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "1")
    monkeypatch.setenv("CONTROLPLANE_CONTROL__TICK_S", "2")
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert "disagree (from the environment: CONTROLPLANE_SIM__TICK_S, CONTROLPLANE_CONTROL__TICK_S)" in str(exc.value)


def test_a_bad_value_under_an_old_name_is_named_by_it_and_its_source(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("sim: {tick_s: 0}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (f"invalid configuration in {path}:\n  sim.tick_s (the old name of control.tick_s): "
                              "Input should be greater than 0, got 0")
    path.write_text("control: {tick_s: 2}\n")
    monkeypatch.setenv("CONTROLPLANE_SIM__TICK_S", "0")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == ("invalid configuration:\n  sim.tick_s (the old name of control.tick_s): Input should be "
                              "greater than 0, got '0' (from the environment: CONTROLPLANE_SIM__TICK_S)")


@pytest.mark.parametrize(("name", "text", "problem"), [
    ("dup.yaml", "seed: 1\nseed: 2\n", "the key 'seed' is given twice in one mapping (line 1 and line 2)"),
    ("dup.json", '{"seed": 1,\n "seed": 2}', "the key 'seed' is given twice in one object (line 1 and line 2)"),
    ("dup.json", '{"cluster": {"models": [{"name": "a"}], "max_retries": 1},\n "sim": {"exact": true},\n'
                 ' "cluster": {"max_retries": 0}}', "the key 'cluster' is given twice in one object (line 1 and line 3)"),
    ("dup.toml", "seed = 1\nseed = 2\n", "not valid toml: Cannot overwrite a value (at line 2"),
])
def test_a_key_given_twice_in_a_file_is_refused_naming_the_file_key_and_lines(tmp_path, name, text, problem):
    """YAML and JSON kept the last silently: a second `cluster:` dropped the first's models."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: {problem}")


def test_json_objects_that_share_key_names_are_not_repeated_keys(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"name": "x", "cluster": {"models": [{"name": "a"}, {"name": "b"}]}, "plugins": '
                    '{"settings": {"queue-limit": {"max_queued": 3}, "exact-cache": {"name": "\\"name\\": 1"}}}}')
    assert read_config_file(path)["plugins"]["settings"]["exact-cache"] == {"name": '"name": 1'}


@pytest.mark.parametrize(("text", "key"), [
    ("control: {tick_s: .inf}\n", "control.tick_s"),
    ("control: {metrics_interval_s: .inf}\n", "control.metrics_interval_s"),
    ("control: {latency_window_s: .nan}\n", "control.latency_window_s"),
    ("sim: {until_s: .inf}\n", "sim.until_s"),
    ("sim: {guardian_latency_s: .inf}\n", "sim.guardian_latency_s"),
    ("slo: {e2e_s: .inf}\n", "slo.e2e_s"),
    ("cluster: {models: [{cold_start_s: .inf}]}\n", "cluster.models.0.cold_start_s"),
    ("cluster: {models: [{load_bandwidth_gb_s: .inf}]}\n", "cluster.models.0.load_bandwidth_gb_s"),
    ("cluster: {gpu_prices: {h100-80gb: .inf}}\n", "cluster.gpu_prices.h100-80gb"),
])
def test_an_infinite_or_nan_setting_is_refused(tmp_path, text, key):
    """`control: {tick_s: .inf}` ran, to an infinite cost and a summary that was not JSON."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"invalid configuration in {path}:\n  {key}: Input should be a finite number"


def test_a_guardian_s_infinite_setting_is_refused():
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"guardians": {"models": [{"name": "g", "kind": "simulated", "timeout_s": float("inf")}]}})
    assert "guardians: models.0.timeout_s: Input should be a finite number, got inf" in str(exc.value)


@pytest.mark.parametrize(("name", "key", "section"), [
    ("CONTROLPLANE_CLUSTER__MODELS__0__REPLICAS", "cluster.models", "CONTROLPLANE_CLUSTER__MODELS"),
    ("CONTROLPLANE_PLUGINS__ENABLED__0", "plugins.enabled", "CONTROLPLANE_PLUGINS__ENABLED"),
])
def test_a_list_set_item_by_item_from_the_environment_names_the_variable(tmp_path, monkeypatch, name, key, section):
    """It said "invalid configuration in base.yaml: cluster.models: Input should be a valid list": the file blamed,
    the variable never named."""
    path = tmp_path / "base.yaml"
    path.write_text("cluster:\n  models:\n    - {name: default, replicas: 3}\n")
    monkeypatch.setenv(name, "5")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (f"invalid configuration:\n  {key}: Input should be a valid list, got a mapping (from the "
                              f"environment: {name}; a list is set whole, as JSON: {section}='[...]')")


def test_a_variable_under_a_section_is_not_blamed_for_the_file_s_error_there(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("cluster:\n  models: [{name: a}, {name: a}]\n")
    monkeypatch.setenv("CONTROLPLANE_CLUSTER__MAX_RETRIES", "1")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"invalid configuration in {path}:\n  cluster: Value error, model names must be")
    assert "environment" not in str(exc.value)


def test_precision_and_model_spec_are_checked_against_the_catalogue_when_the_config_loads():
    from controlplane.hardware.specs import UnknownSpecError, get_precision

    assert load_config(None, {"cluster": {"models": [{"precision": "BF16", "model_spec": "llama2-7b"}]}})
    assert load_config(None, {"cluster": {"models": [{"precision": "auto"}]}})  # (a live worker's own choice)
    with pytest.raises(ConfigError) as bad:
        load_config(None, {"cluster": {"models": [{"precision": "fp61"}]}})
    # `auto` is accepted (and documented), so the error lists it with the catalogue's precisions
    assert ("cluster.models.0.precision: unknown precision 'fp61'; known: auto, bf16, fp16, fp32, fp8, int8, nf4"
            in str(bad.value))
    with pytest.raises(UnknownSpecError) as exc:
        get_precision("fp61")
    assert str(exc.value) == "unknown precision 'fp61'; known: bf16, fp16, fp32, fp8, int8, nf4"  # (not quoted)
    with pytest.raises(ConfigError, match=r"sim\.guardian_tenant_block_rates\.a: Input should be greater than or "):
        load_config(None, {"sim": {"guardian_tenant_block_rates": {"a": -0.1}}})


@pytest.mark.parametrize(("text", "line"), [
    ("control:\n  # tick_s: 2\n", "control: an empty section (nothing under its key, or only comments): give it keys "
                                   "or remove the key"),
    ("plugins:\n  settings:\n    queue-limit:\n", "plugins.settings.queue-limit: an empty section (nothing under its "
                                                  "key, or only comments): give it keys or remove the key"),
    ("cluster:\n  models:\n    -\n", "cluster.models.0: an empty list item (a `-` with nothing under it): give its "
                                     "keys or remove it"),
    ("sim: {guardian_tenant_block_rates: {no: 0.1}}\n", "sim.guardian_tenant_block_rates: the key False: Input "
     "should be a valid string: YAML reads off/no/yes/on (unquoted) as booleans; quote it"),
    ("name: off\n", "name: Input should be a valid string, got False: YAML reads off/no/yes/on (unquoted) as booleans; "
                    "quote it"),
    ("name: 2024-01-01\n", "name: Input should be a valid string, got 2024-01-01 (YAML reads it as a date); quote it"),
    ("control: [1]\n", "control: Input should be a valid dictionary or instance of ControlConfig, got a list"),
    ("control: {tick_s: }\n", "control.tick_s: Input should be a valid number, got null (nothing after the key, or "
                              "only comments)"),
])
def test_yaml_s_quirks_are_explained_with_the_value_received(tmp_path, text, line):
    """An empty section said "Input should be a valid dictionary or instance of ControlConfig"; a tenant `no`,
    "...0.[key]: Input should be a valid string": neither what was received nor why."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"invalid configuration in {path}:\n  {line}"


def test_plugin_settings_errors_can_be_worded_the_same():
    """`controlplane.config.error_message` words one pydantic error as the config's errors are (the plugin manager
    formats plugin settings' errors)."""
    from typing import Literal

    from pydantic import BaseModel, ValidationError

    from controlplane.config import error_message

    class Settings(BaseModel):
        startup_release: Literal["off", "steady", "quantile"] = "off"

    with pytest.raises(ValidationError) as exc:
        Settings(startup_release=False)  # YAML's `off`
    assert error_message(exc.value.errors()[0]) == ("Input should be 'off', 'steady' or 'quantile', got False: YAML "
                                                    "reads off/no/yes/on (unquoted) as booleans; quote it")
    with pytest.raises(ValidationError) as exc:
        Settings(startup_release="of")
    assert error_message(exc.value.errors()[0]) == "Input should be 'off', 'steady' or 'quantile', got 'of'"


@pytest.mark.parametrize(("name", "text"), [
    ("run.TOML", 'seed = 7\n[control]\ntick_s = 2.0\n'),
    ("run.JSON", '{"seed": 7, "control": {"tick_s": 2.0}}'),
    ("run.Yml", "seed: 7\ncontrol: {tick_s: 2.0}\n"),
    ("bom.toml", '\ufeffseed = 7\n[control]\ntick_s = 2.0\n'),
    ("bom.json", '\ufeff{"seed": 7, "control": {"tick_s": 2.0}}'),
    ("bom.yaml", "\ufeffseed: 7\ncontrol: {tick_s: 2.0}\n"),
])
def test_a_suffix_in_capitals_and_a_byte_order_mark_are_read(tmp_path, name, text):
    """run.TOML was parsed as YAML; a TOML file starting with a BOM: "Invalid statement (at line 1, column 1)"."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    c = load_config(path)
    assert (c.seed, c.control.tick_s) == (7, 2.0)


def test_a_file_that_is_not_a_regular_one_is_read(tmp_path):
    """`-c /dev/null` said "config file not found: /dev/null"."""
    import os
    import threading

    assert load_config("/dev/null") == RunConfig()
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # as bash's `-c <(...)` gives

    def write() -> None:
        with open(fifo, "w") as f:  # (waits for the reader)
            f.write("seed: 9\n")

    threading.Thread(target=write, daemon=True).start()  # (a daemon: it does not outlive a failed test's process)
    assert load_config(fifo).seed == 9


def test_a_plugin_setting_yaml_read_as_a_boolean_shows_the_value_received(tmp_path):
    from controlplane.errors import SettingsError
    from controlplane.session import RunSession

    path = tmp_path / "run.yaml"
    path.write_text("plugins: {enabled: [slo-planner, fixed-replicas, continuous-batching, least-loaded, "
                    "builtin-latency-models, static-memory], settings: {slo-planner: {startup_release: off}}}\n")
    with pytest.raises(SettingsError) as exc:
        RunSession(load_config(path), mode="sim", record=False)
    assert "plugins.settings.slo-planner.startup_release: Input should be 'off', 'steady' or 'quantile', got False: " \
           "YAML reads off/no/yes/on (unquoted) as booleans; quote it" in str(exc.value)


def test_a_config_changed_in_code_is_checked_again_when_a_replay_starts():
    """``c.control.tick_s = -1`` after the config was made hung the replay for ever; ``tick_s = 0`` divided by
    zero, ``replicas = -3`` left every request in flight; a path given as the config read 'str' has no 'seed'."""
    from controlplane.testing import make_config, make_trace
    from sim.replay import replay

    for section, key, value, said in (("control", "tick_s", -1.0, "control.tick_s: Input should be greater than 0"),
                                      ("control", "tick_s", 0.0, "control.tick_s: Input should be greater than 0"),
                                      ("slo", "ttft_s", -1.0, "slo.ttft_s: Input should be greater than 0")):
        config = make_config()
        setattr(getattr(config, section), key, value)
        with pytest.raises(ConfigError, match=re.escape(said)):
            replay(make_trace(5), config, record=False)
    config = make_config()
    config.cluster.models[0].replicas = -3
    with pytest.raises(ConfigError, match=r"cluster\.models\.0\.replicas: Input should be greater than or equal to 0"):
        replay(make_trace(5), config, record=False)
    with pytest.raises(TypeError, match="config must be a RunConfig .* got str"):
        replay(make_trace(5), "cluster.yaml", record=False)


def test_a_dump_leaves_out_empty_own_gpus_and_models():
    """Every dumped config carried `gpus: {}` and `model_specs: {}` once they existed: a sweep spec's hash changed
    (a stored sweep was run again as a new one) and the release before refused a stored config ('Extra inputs are
    not permitted'). Left out while empty, kept when given."""
    from controlplane.config import RunConfig

    assert set(RunConfig().model_dump(mode="json")["cluster"]) == {"models", "max_retries", "gpu_prices"}
    own = RunConfig.model_validate({"cluster": {"gpus": {"l40s-own": {"memory_gib": 48, "fp16_tflops": 362,
                                                                       "memory_bandwidth_gb_s": 864}}}})
    dumped = own.model_dump(mode="json")["cluster"]
    assert "l40s-own" in dumped["gpus"] and "model_specs" not in dumped
    assert RunConfig.model_validate(own.model_dump(mode="json")).cluster.gpus.keys() == {"l40s-own"}
