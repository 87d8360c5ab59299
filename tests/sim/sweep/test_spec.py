"""A sweep spec's trace section (sim/sweep/spec.py TraceSpec): its rate profile, as text or as points."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError
from sim.replay import TraceTransforms, prepare_trace
from sim.sweep import load_spec
from sim.sweep.run import load_traces, transforms_of

SPACE = {"cluster.models.0.replicas": [2, 3]}


def test_a_rate_profile_as_text_or_points_is_the_same_sweep():
    text = load_spec(data={"trace": {"rate_profile": "0:1, 600:2", "limit": 50}, "space": SPACE})
    points = load_spec(data={"trace": {"rate_profile": [[0, 1], [600.0, 2]], "limit": 50}, "space": SPACE})
    assert text.spec.trace.rate_profile == points.spec.trace.rate_profile == [(0.0, 1.0), (600.0, 2.0)]
    assert text.hash == points.hash != load_spec(data={"trace": {"limit": 50}, "space": SPACE}).hash
    assert transforms_of(text) == TraceTransforms(rate_profile=[(0, 1), (600, 2)], limit=50)


def test_the_sweeps_requests_are_those_a_replay_with_the_profile_reads():
    loaded = load_spec(data={"trace": {"format": "azure", "window_end_s": 900, "rate_profile": "0:0.5,900:2"},
                             "space": SPACE, "seeds": [3]})
    got = load_traces(loaded, [3])["seed=3"]
    assert got == list(prepare_trace(loaded.trace_path(), seed=3, trace_format="azure",
                                     transforms=TraceTransforms(window_end_s=900, rate_profile=[(0, 0.5), (900, 2)])))
    assert any(r.request_id.endswith(".r1") for r in got)


@pytest.mark.parametrize("profile, message", [
    ("0:x", "trace.rate_profile: point '0:x': factor 'x' is not a number; give TIME_S:FACTOR points"),
    ([[0, 1], [0, 2]], "trace.rate_profile: point 1: its time, 0 s, must be later than the point before's (0 s)"),
    ([[0, -1]], "trace.rate_profile: point 0: factor must be a finite number >= 0"),
    (5, "trace.rate_profile: rate_profile points must be a non-empty list"),
])
def test_a_bad_rate_profile_is_named_when_the_spec_loads(profile, message):
    with pytest.raises(ConfigError) as raised:
        load_spec(data={"trace": {"rate_profile": profile}, "space": SPACE})
    assert message in str(raised.value)


def test_length_scales_are_the_replays_transforms_and_a_spec_without_them_hashes_as_before():
    import hashlib
    import json

    scaled = load_spec(data={"trace": {"prompt_scale": 0.25, "output_scale": 2, "limit": 50}, "space": SPACE})
    assert transforms_of(scaled) == TraceTransforms(prompt_scale=0.25, output_scale=2.0, limit=50)
    plain = load_spec(data={"trace": {"limit": 50}, "space": SPACE})
    assert scaled.hash != plain.hash
    # without them the hashed spec has no such keys: a sweep stored before they existed still resumes
    dumped = plain.spec.model_dump(mode="json", exclude={"name": True})
    for key in ("rate_profile", "prompt_scale", "output_scale"):
        del dumped["trace"][key]
    text = json.dumps({"spec": dumped, "base": plain.base_config}, sort_keys=True, default=str)
    assert plain.spec.spec_hash(plain.base_config) == hashlib.sha256(text.encode()).hexdigest()[:24]


@pytest.mark.parametrize("key", ["prompt_scale", "output_scale"])
@pytest.mark.parametrize("value, message", [(0, "greater than 0"), (-1, "greater than 0"), ("nan", "finite number"),
                                            ("inf", "finite number"), ("x", "valid number")])
def test_a_bad_length_scale_is_named_when_the_spec_loads(key, value, message):
    with pytest.raises(ConfigError) as raised:
        load_spec(data={"trace": {key: value}, "space": SPACE})
    assert f"trace.{key}" in str(raised.value) and message in str(raised.value)
