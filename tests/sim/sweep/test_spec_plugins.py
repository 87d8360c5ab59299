"""`sim.sweep.spec_plugins`: a spec naming a plugin that is not installed, or a setting its plugin
does not take, is refused when the spec is loaded (before any run), naming the key."""

from __future__ import annotations

import types

import pytest

from controlplane.errors import ConfigError
from controlplane.plugin_manager import PluginInfo, discover_plugins
from sim.sweep import load_spec
from sim.sweep.spec_plugins import check_plugin_names

BATCHING = ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
            "builtin-latency-models"]


@pytest.mark.parametrize(("space", "message"), [
    ({"plugins.enabled": [BATCHING, [*BATCHING[:-1], "roofline-latency"]]},
     "space.plugins.enabled: unknown plugin 'roofline-latency'; installed: builtin-latency-models, "),
    ({"plugins.enabled.1": ["least-loaded", "leest-loaded"]},
     "space.plugins.enabled.1: unknown plugin 'leest-loaded' (did you mean 'least-loaded'?)"),
    ({"routing": [{"plugins.enabled": BATCHING}, {"plugins.enabled": ["round-robn", *BATCHING[2:]]}]},
     "space.routing[1].plugins.enabled: unknown plugin 'round-robn' (did you mean 'round-robin'?)"),
    ({"plugins.settings.continuous-batchin.policy": ["vllm"]},
     "space.plugins.settings.continuous-batchin.policy: unknown plugin 'continuous-batchin' (did you mean "
     "'continuous-batching'"),
    ({"plugins.settings.continuous-batching.polcy": ["vllm", "sarathi"]},
     "space.plugins.settings.continuous-batching.polcy: plugin 'continuous-batching' has no setting 'polcy' "
     "(did you mean 'policy'?)"),
    ({"plugins.settings.continuous-batching": [{"policy": "vllm"}, {"polcy": "sarathi"}]},
     "space.plugins.settings.continuous-batching: plugin 'continuous-batching' has no setting 'polcy'"),
    ({"plugins.settings": [{"queue-limit": {"max_queued_per_replica": 3}}, {"queue-limit": {"zzz": 3}}]},
     "space.plugins.settings: plugin 'queue-limit' has no setting 'zzz'; its settings: "),
])
def test_an_unknown_plugin_or_setting_anywhere_in_the_space_is_named(space, message):
    with pytest.raises(ConfigError) as exc:
        load_spec(data={"space": space})
    assert str(exc.value).startswith(f"sweep spec: {message}")
    assert "\n" not in str(exc.value)


def test_a_range_over_an_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match=r"space\.plugins\.settings\.queue-limit\.max_queud_per_replica: plugin "
                                          r"'queue-limit' has no setting 'max_queud_per_replica' \(did you mean "
                                          r"'max_queued_per_replica'"):
        load_spec(data={"mode": "random", "samples": 2,
                        "space": {"plugins.settings.queue-limit.max_queud_per_replica": {"low": 1, "high": 9}}})


def test_an_unknown_plugin_in_the_base_is_refused():
    with pytest.raises(ConfigError, match=r"sweep spec: base: unknown plugin 'least-loded' \(did you mean 'least-loaded'"):
        load_spec(data={"base": {"plugins.enabled": ["least-loded", *BATCHING[2:]]},
                        "space": {"cluster.models.0.replicas": [1, 2]}})


def test_known_plugins_and_settings_pass():
    loaded = load_spec(data={"space": {
        "plugins.settings.continuous-batching.policy": ["vllm", "sarathi"],  # (values: sim.sweep.spec_settings)
        "routing": [{"plugins.enabled": BATCHING}, {"plugins.enabled": ["round-robin", *BATCHING[2:]]}]}})
    assert len(loaded.points()) == 4


def test_a_plugin_module_takes_no_settings():
    available = {**discover_plugins(), "hook-module": PluginInfo("hook-module", types.ModuleType("hook_module"),
                                                                 None, None, None)}
    check_plugin_names({"plugins.enabled": [["hook-module"]]}, {}, "spec.yaml", available)
    with pytest.raises(ConfigError, match=r"^spec\.yaml: space\.plugins\.settings\.hook-module\.limit: plugin "
                                          r"'hook-module' takes no settings \(given 'limit'\)$"):
        check_plugin_names({"plugins.settings.hook-module.limit": [1]}, {}, "spec.yaml", available)
