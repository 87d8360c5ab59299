"""`sim.sweep.spec_settings`: every point's plugin settings are validated when the spec is loaded,
as its run would validate them, and a bad value is named by its key, its value and its place in
the spec (before any run)."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError
from sim.sweep import load_spec

BATCHING = ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
            "builtin-latency-models"]
CB = "plugins.settings.continuous-batching"


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        load_spec(data=data)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_a_bad_value_late_in_a_grid_is_refused_at_load_naming_key_value_and_position():
    msg = refused({"space": {"cluster.models.0.replicas": [1, 2],
                             f"{CB}.chunk_size": [64, 128, 256, 512, 1024, 2048, 0, 4096]}})
    assert msg == f"sweep spec: space.{CB}.chunk_size[6] = 0: Input should be greater than or equal to 1"


def test_a_bad_literal_in_a_bundle_names_the_bundle_entry():
    msg = refused({"space": {"batching": [{f"{CB}.policy": "vllm", f"{CB}.chunk_size": 256},
                                          {f"{CB}.policy": "sarathy", f"{CB}.chunk_size": 256}]}})
    assert msg == f"sweep spec: space.batching[1].{CB}.policy = 'sarathy': Input should be 'vllm' or 'sarathi'"


def test_a_whole_settings_mapping_as_a_value_names_the_setting_inside_it():
    msg = refused({"space": {CB: [{"policy": "vllm"}, {"policy": "sarathi", "watermark": 1.5}]}})
    assert msg == f"sweep spec: space.{CB}[1]: {CB}.watermark = 1.5: Input should be less than 1"


def test_a_bad_value_in_the_base_is_refused_too():
    msg = refused({"base": {f"{CB}.policy": "fifo"}, "space": {"cluster.models.0.replicas": [1, 2]}})
    assert msg == f"sweep spec: base: {CB}.policy = 'fifo': Input should be 'vllm' or 'sarathi'"


def test_settings_checked_together_name_every_value_that_set_them():
    qs = "plugins.settings.queue-limit"
    msg = refused({"space": {f"{qs}.output_window": [64, 16], f"{qs}.output_min_finished": [10, 20]}})
    assert msg == (f"sweep spec: space.{qs}.output_window[1] and space.{qs}.output_min_finished[1]: {qs}: "
                   "Value error, output_min_finished (20) must be at most output_window (16)")


def test_a_drawn_value_names_its_range():
    msg = refused({"mode": "random", "samples": 40, "space": {f"{CB}.watermark": {"low": 0.5, "high": 2.0}}})
    assert msg.startswith(f"sweep spec: space.{CB}.watermark = ") and msg.endswith(": Input should be less than 1")


def test_settings_of_a_plugin_a_point_does_not_enable_are_refused_naming_the_point():
    msg = refused({"space": {f"{CB}.policy": ["vllm"],
                             "batching": [{"plugins.enabled": BATCHING},
                                          {"plugins.enabled": [*BATCHING[:2], "static-batching", *BATCHING[3:]]}]}})
    assert msg == (f"sweep spec: space.{CB}.policy[0] and space.batching[1].plugins.enabled: plugins.settings: "
                   "settings given for plugin(s) not enabled: 'continuous-batching'")


def test_a_bad_plugins_section_names_the_point():
    with pytest.raises(ConfigError, match=r"^sweep spec: sweep point \{'plugins.enabled': 'least-loaded'\}: invalid "
                                          r"configuration: plugins.enabled: Input should be a valid list"):
        load_spec(data={"space": {"plugins.enabled": [BATCHING, "least-loaded", ["round-robin", *BATCHING[1:]]]}})


def test_good_values_pass_and_every_point_is_kept():
    loaded = load_spec(data={"space": {f"{CB}.policy": ["vllm", "sarathi"], f"{CB}.chunk_size": [64, 512],
                                       "routing": [{"plugins.enabled": BATCHING},
                                                   {"plugins.enabled": ["round-robin", *BATCHING[2:]]}]}})
    assert len(loaded.points()) == 8
