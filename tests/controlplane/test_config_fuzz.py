"""Property-based tests of the config loader: any file or value gives a `RunConfig` or a
`ConfigError` that names the file and the key; never another exception."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.config import RunConfig, load_config
from controlplane.errors import ConfigError

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Real keys (so values get validated, not only rejected as unknown) and a few unknown ones.
SECTION_KEYS = {
    "control": ["tick_s", "metrics_interval_s", "latency_window_s", "bogus"],
    "sim": ["exact", "until_s", "guardian_latency_s", "tick_s", "bogus"],
    "slo": ["ttft_s", "tpot_s", "e2e_s"],
    "storage": ["url", "batch_size", "record_batches", "max_pending_rows"],
    "plugins": ["enabled", "settings"],
    "auth": ["api_keys"],
    "cluster": ["max_retries", "models"],
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["nan", "inf", "-1", "1e400", "", "0"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


@st.composite
def configs(draw) -> dict:
    config: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTION_KEYS) + ["seed", "name", "nonsense"]),
                                 max_size=3, unique=True)):
        if section in SECTION_KEYS:
            keys = draw(st.lists(st.sampled_from(SECTION_KEYS[section]), max_size=3, unique=True))
            config[section] = {k: draw(values) for k in keys} if draw(st.booleans()) else draw(values)
        else:
            config[section] = draw(values)
    return config


@FUZZ
@given(config=configs())
def test_any_config_file_loads_or_names_the_problem(tmp_path_factory, config):
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message
        assert "Traceback" not in message
        return
    assert isinstance(loaded, RunConfig)
    json.dumps(loaded.model_dump(mode="json"))  # a loaded config can always be stored with its run


@FUZZ
@given(data=st.binary(max_size=120), suffix=st.sampled_from([".yaml", ".toml", ".json"]))
def test_any_bytes_in_a_config_file_give_a_config_error_or_a_config(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("raw") / f"run{suffix}"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
