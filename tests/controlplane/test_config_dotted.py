"""`load_config` overrides as dotted keys (`cluster.models.0.replicas`, as a sweep spec takes them), and a nested
override's list that would drop what the config file gives its items."""

from __future__ import annotations

import re

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError

FILE = ("cluster:\n  models:\n    - name: chat\n      replicas: 4\n      latency_model: linear\n"
        "      latency: {base_s: 0.01}\nseed: 3\n")


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTROLPLANE_SEED", raising=False)
    p = tmp_path / "run.yaml"
    p.write_text(FILE)
    return p


def test_a_dotted_key_sets_one_key_of_a_list_item(path):
    config = load_config(path, {"cluster.models.0.replicas": 2})  # (was "Extra inputs are not permitted")
    d = config.cluster.models[0]
    assert (d.name, d.replicas, d.latency_model, d.latency) == ("chat", 2, "linear", {"base_s": 0.01})
    assert config.seed == 3


def test_dotted_keys_are_set_over_the_nested_ones_and_the_environment(path, monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_SEED", "9")
    config = load_config(path, {"control": {"tick_s": 0.5}, "control.tick_s": 2.0, "sim.until_s": 30})
    assert (config.control.tick_s, config.sim.until_s, config.seed) == (2.0, 30, 9)


@pytest.mark.parametrize("overrides, message", [
    ({"cluster.models.3.replicas": 2}, "cluster.models.3: index 3 out of range (the list has 1 items)"),
    ({"cluster.models.0.replicaz": 2},
     "invalid configuration:\n  cluster.models.0.replicaz: Extra inputs are not permitted (given as an override)"),
    ({"cluster.models.0.replicas": -1}, "invalid configuration:\n  cluster.models.0.replicas: Input should be "
                                        "greater than or equal to 0, got -1 (given as an override)"),
])
def test_a_bad_dotted_key_is_named(path, overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(path, overrides)


def test_a_nested_list_dropping_the_file_s_keys_is_refused_naming_the_dotted_keys(path):
    # (it replaced the deployment silently: its latency model went back to the default, its name to "default")
    with pytest.raises(ConfigError) as raised:
        load_config(path, {"cluster": {"models": [{"replicas": 2}]}})
    assert str(raised.value) == (
        f"invalid configuration:\n  cluster.models: an override's list replaces the list in {path} whole, and its "
        "item 0 ({'replicas': 2}) would drop keys the file's item 0 gives (name, latency_model, latency); to change "
        "only the keys it names, give dotted keys: {'cluster.models.0.replicas': 2}; to replace the list, give the "
        "dotted key 'cluster.models': {'cluster.models': [...]}")


def test_a_list_is_still_set_whole_by_a_whole_item_or_the_dotted_key(path):
    whole = {"name": "chat", "replicas": 1, "latency_model": "linear", "latency": {}}
    assert load_config(path, {"cluster": {"models": [whole]}}).cluster.models[0].latency == {}
    config = load_config(path, {"cluster.models": [{"replicas": 2}]})
    assert (config.cluster.models[0].name, config.cluster.models[0].replicas) == ("default", 2)
    assert load_config(None, {"cluster": {"models": [{"replicas": 2}]}}).cluster.models[0].replicas == 2  # no file
