"""A sweep spec's trace section (sim/sweep/spec.py TraceSpec): its rate profile, as text or as points."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError
from sim.replay import TraceTransforms, prepare_trace
from sim.sweep import load_spec
from sim.sweep.run import load_traces, transforms_of

SPACE = {"cluster.models.0.replicas": [2, 3]}


def test_copies_is_the_replays_transform_and_a_bad_placement_is_named_by_its_key():
    spec = load_spec(data={"trace": {"rate_scale": 3, "copies": "shuffled", "limit": 50}, "space": SPACE})
    assert transforms_of(spec) == TraceTransforms(rate_scale=3, copies="shuffled", limit=50)
    with pytest.raises(ValueError, match="copies"):
        load_spec(data={"trace": {"rate_scale": 3, "copies": "spread"}, "space": SPACE})


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


def _search_as_before(dumped: dict) -> dict:
    """A dumped spec's search section as it was hashed before ``select_seed`` existed and ``confirm_seeds``' default
    became 1, 2, 3 (a spec leaving both unset: `SweepSpec.spec_hash` hashes it so, and a stored sweep resumes)."""
    search = {k: v for k, v in dumped["search"].items() if k != "select_seed"}
    return {**dumped, "search": {**search, "confirm_seeds": [0, 1, 2]}}


def test_a_spec_leaving_the_search_seeds_unset_hashes_as_before_they_changed():
    """`select_seed` (0) and confirm_seeds' default (now 1, 2, 3) left unset hash as before, so a stored sweep of such
    a spec resumes; a spec that sets another selection seed is another."""
    plain = load_spec(data={"trace": {"limit": 50}, "space": SPACE})
    assert plain.hash == load_spec(data={"trace": {"limit": 50}, "space": SPACE,
                                         "search": {"select_seed": 0, "confirm_seeds": [0, 1, 2]}}).hash
    assert plain.hash != load_spec(data={"trace": {"limit": 50}, "space": SPACE, "search": {"select_seed": 4}}).hash


def test_length_scales_are_the_replays_transforms_and_a_spec_without_them_hashes_as_before():
    import hashlib
    import json

    scaled = load_spec(data={"trace": {"prompt_scale": 0.25, "output_scale": 2, "limit": 50}, "space": SPACE})
    assert transforms_of(scaled) == TraceTransforms(prompt_scale=0.25, output_scale=2.0, limit=50)
    plain = load_spec(data={"trace": {"limit": 50}, "space": SPACE})
    assert scaled.hash != plain.hash
    # without them the hashed spec has no such keys: a sweep stored before they existed still resumes
    dumped = plain.spec.model_dump(mode="json", exclude={"name": True})
    for key in ("rate_profile", "copies", "prompt_scale", "output_scale", "max_prompt_tokens", "max_output_tokens"):
        del dumped["trace"][key]
    text = json.dumps({"spec": _search_as_before(dumped), "base": plain.base_config}, sort_keys=True, default=str)
    assert plain.spec.spec_hash(plain.base_config) == hashlib.sha256(text.encode()).hexdigest()[:24]


@pytest.mark.parametrize("trace, message", [
    ({"speed_up": float("inf")}, "trace.speed_up must be a finite number > 0, got inf"),
    ({"speed_up": float("nan")}, "trace.speed_up must be a finite number > 0, got nan"),
    ({"speed_up": 0}, "trace.speed_up must be a finite number > 0, got 0"),
    ({"speed_up": -2}, "trace.speed_up must be a finite number > 0, got -2"),
    ({"rate_scale": float("inf")}, "trace.rate_scale must be a finite number > 0, got inf"),
    ({"rate_scale": float("nan")}, "trace.rate_scale must be a finite number > 0, got nan"),
    ({"rate_scale": 0}, "trace.rate_scale must be a finite number > 0, got 0"),
    ({"rate_scale": float("inf"), "rate_profile": "0:1,60:2"}, "trace.rate_scale must be a finite number > 0, got inf"),
    ({"repeat": 0}, "trace.repeat must be an integer >= 1, got 0"),
    ({"repeat": -1}, "trace.repeat must be an integer >= 1, got -1"),
    ({"prompt_scale": 0}, "trace.prompt_scale must be a finite number > 0, got 0"),
    ({"prompt_scale": -1}, "trace.prompt_scale must be a finite number > 0, got -1"),
    ({"output_scale": float("nan")}, "trace.output_scale must be a finite number > 0, got nan"),
    ({"output_scale": float("inf")}, "trace.output_scale must be a finite number > 0, got inf"),
    ({"window_start_s": float("inf")}, "trace.window_start_s must be a finite number of seconds >= 0, got inf"),
    ({"window_end_s": float("nan")}, "trace.window_end_s must be a finite number of seconds >= 0, got nan"),
    ({"window_start_s": 20, "window_end_s": 10}, "trace.window_end_s (10) must be greater than trace.window_start_s (20)"),
    ({"max_prompt_tokens": 0}, "trace.max_prompt_tokens must be an integer >= 1"),
    ({"max_output_tokens": -5}, "trace.max_output_tokens must be an integer >= 1"),
    ({"max_output_tokens": 1.5}, "trace.max_output_tokens: Input should be a valid integer"),
    ({"prompt_scale": "x"}, "trace.prompt_scale: Input should be a valid number"),
    ({"limit": 0}, "trace.limit: Input should be greater than or equal to 1"),  # (a sweep of no requests)
])
def test_a_bad_transform_value_is_named_by_its_key_when_the_spec_loads(trace, message):
    """Each value is checked by the replay's own transforms (`TraceTransforms`) when the spec loads, not when a
    sweep's traces are read (``speed_up: .inf`` used to be accepted, then fail the sweep after it was stored)."""
    with pytest.raises(ConfigError) as raised:
        load_spec(data={"trace": trace, "space": SPACE})
    assert message in str(raised.value)
    assert str(raised.value).count("trace.") == message.count("trace.")  # (named once, by the key alone)


def test_a_yaml_specs_infinite_speed_up_is_named_with_its_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace:\n  speed_up: .inf\nspace:\n  cluster.models.0.replicas: [2, 3]\n")
    with pytest.raises(ConfigError) as raised:
        load_spec(spec)
    assert str(raised.value) == f"invalid sweep spec {spec}: trace.speed_up must be a finite number > 0, got inf"


def test_the_messages_are_the_transforms_own_with_the_specs_keys():
    from sim.traces.transforms import TransformValueError

    with pytest.raises(TransformValueError) as raised:
        list(TraceTransforms(speed_up=float("inf")).apply(iter(()), 0))
    assert raised.value.named({"speed_up": "trace.speed_up"}) in str(
        pytest.raises(ConfigError, load_spec, data={"trace": {"speed_up": float("inf")}, "space": SPACE}).value)


def test_length_caps_are_the_replays_transforms():
    capped = load_spec(data={"trace": {"max_prompt_tokens": 2048, "max_output_tokens": 256, "limit": 30},
                             "space": SPACE, "seeds": [1]})
    assert transforms_of(capped) == TraceTransforms(max_prompt_tokens=2048, max_output_tokens=256, limit=30)
    assert transforms_of(capped, limit=5) == TraceTransforms(max_prompt_tokens=2048, max_output_tokens=256, limit=5)
    got = load_traces(capped, [1])["seed=1"]
    assert got == list(prepare_trace(capped.trace_path(), seed=1, trace_format="azure",
                                     transforms=TraceTransforms(max_prompt_tokens=2048, max_output_tokens=256,
                                                                limit=30)))
    assert max(r.prompt_tokens for r in got) == 2048 and max(r.output_tokens for r in got) <= 256
    assert capped.hash != load_spec(data={"trace": {"limit": 30}, "space": SPACE, "seeds": [1]}).hash


def test_a_spec_without_the_later_trace_keys_hashes_as_it_did_before_they_existed():
    """A stored sweep is resumed by its spec's hash: these values were computed before ``max_prompt_tokens`` /
    ``max_output_tokens`` existed (and by the code before the transforms' checks replaced pydantic's bounds)."""
    from sim.sweep.spec import SweepSpec

    hashes = {}
    for i, trace in enumerate([{}, {"limit": 50}, {"speed_up": 2, "rate_profile": "0:1,60:2", "prompt_scale": 0.5,
                                                   "window_end_s": 600}]):
        hashes[i] = SweepSpec(trace=trace, space=SPACE, seeds=[0, 1]).spec_hash({"base": 1})
    assert hashes == {0: "9252cbe1900eb0f95e24a587", 1: "c96be814be25d535b3fa8aac", 2: "48d319beef79877dfc152823"}
    capped = SweepSpec(trace={"limit": 50, "max_output_tokens": 64}, space=SPACE, seeds=[0, 1])
    assert capped.spec_hash({"base": 1}) != hashes[1]


def test_good_transform_values_still_load():
    """The check reads nothing and refuses nothing a replay takes (a repeat reads its trace again: no stream)."""
    trace = {"window_start_s": 60, "window_end_s": 600, "speed_up": 0.5, "repeat": 3, "rate_scale": 1.5,
             "rate_profile": "0:1,60:2", "limit": 10, "prompt_scale": 0.25, "output_scale": 4,
             "max_prompt_tokens": 1, "max_output_tokens": 1}
    loaded = load_spec(data={"trace": trace, "space": SPACE})
    assert transforms_of(loaded) == TraceTransforms(**{**trace, "rate_profile": [(0, 1), (60, 2)]})


def test_the_storage_url_does_not_change_the_sweep(monkeypatch):
    """Via CONTROLPLANE_STORAGE__URL the same spec hashed otherwise than via --db (a new sweep each
    time, and no lock against a colleague's run of it); a sweep hashed with the default URL resumes."""
    import hashlib
    import json

    plain = load_spec(data={"trace": {"limit": 50}, "space": SPACE})
    text = json.dumps({"spec": _search_as_before(plain.spec.model_dump(mode="json", exclude={"name": True, "trace": {
        "rate_profile", "copies", "prompt_scale", "output_scale", "max_prompt_tokens", "max_output_tokens"}})),
        "base": plain.base_config}, sort_keys=True, default=str)
    assert plain.hash == hashlib.sha256(text.encode()).hexdigest()[:24]  # (as before: stored sweeps resume)
    for url in ("postgresql+psycopg://postgres@127.0.0.1:5432/t_b", "postgresql+psycopg://me:secret@localhost/t_b"):
        monkeypatch.setenv("CONTROLPLANE_STORAGE__URL", url)
        via_env = load_spec(data={"trace": {"limit": 50}, "space": SPACE})
        assert via_env.base_config["storage"]["url"] == url and via_env.hash == plain.hash
    assert load_spec(data={"trace": {"limit": 60}, "space": SPACE}).hash != plain.hash


def test_a_random_spec_with_its_keys_reordered_is_another_sweep():
    """mode: random draws the space's keys in their order: the same keys reordered drew other points under the
    same hash, so a rerun resumed the stored sweep and stored a second sample in it (6 runs of a 3-sample spec)."""
    space = {"cluster.models.0.replicas": {"low": 1, "high": 8, "int": True}, "control.tick_s": {"low": 0.5, "high": 2.0}}
    a = load_spec(data={"mode": "random", "samples": 3, "sample_seed": 1, "space": space})
    b = load_spec(data={"mode": "random", "samples": 3, "sample_seed": 1, "space": dict(reversed(space.items()))})
    assert a.spec.points() != b.spec.points()  # (why: other draws)
    assert a.hash != b.hash
    grid = {"cluster.models.0.replicas": [1, 2], "control.tick_s": [0.5, 1.0]}
    assert (load_spec(data={"space": grid}).hash
            == load_spec(data={"space": dict(reversed(grid.items()))}).hash)  # (a grid's points are the same set)


def test_an_allow_list_is_applied_to_each_points_stored_config_and_makes_another_sweep(monkeypatch):
    """Under CONTROLPLANE_LOAD_PLUGINS a point's stored config named a router that never ran, and a rerun without
    the variable resumed those runs as the router's."""
    space = {"routing": [{"plugins.enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                                              "static-memory", "builtin-latency-models"]},
                         {"plugins.enabled": ["queue-limit", "power-of-two", "continuous-batching", "fixed-replicas",
                                              "static-memory", "builtin-latency-models"]}]}
    plain = load_spec(data={"trace": {"limit": 50}, "space": space})
    trace = plain.trace_path()
    plain_hash = plain.run_hash(trace, "azure")
    monkeypatch.setenv("CONTROLPLANE_LOAD_PLUGINS", "queue-limit,round-robin,continuous-batching,fixed-replicas,"
                                                    "static-memory,builtin-latency-models")
    allowed = load_spec(data={"trace": {"limit": 50}, "space": space})
    assert allowed.run_hash(trace, "azure") != plain_hash
    for point in allowed.points():
        enabled = allowed.run_config(point.overrides, point.seed)["plugins"]["enabled"]
        assert "power-of-two" not in enabled and "least-loaded" not in enabled and "queue-limit" in enabled


def test_a_missing_config_file_names_the_spec_its_key_and_where_it_looked(tmp_path, monkeypatch):
    """It said only "config file not found: nothere.yaml" (a missing trace names the spec and `trace.path`)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "win2 spec.yaml"
    spec.write_text("config: nothere.yaml\nspace: {cluster.models.0.replicas: [1]}\n")
    with pytest.raises(ConfigError) as caught:
        load_spec(spec)
    assert str(caught.value) == (f"{spec}: config: config file not found: nothere.yaml (looked for "
                                 f"{tmp_path / 'specs' / 'nothere.yaml'} and {tmp_path / 'nothere.yaml'})")
    spec.write_text(f"config: {tmp_path / 'gone.yaml'}\nspace: {{cluster.models.0.replicas: [1]}}\n")
    with pytest.raises(ConfigError, match=f"^{spec}: config: config file not found: {tmp_path / 'gone.yaml'} "
                                          rf"\(looked for {tmp_path / 'gone.yaml'}\)$"):
        load_spec(spec)


def test_a_spec_hashes_as_the_release_before_own_gpus_and_models_existed():
    """Every dumped base config gained `cluster.gpus: {}` and `cluster.model_specs: {}`: no sweep stored by the
    release before resumed (a new sweep ran every point again, silently). Values computed by that release
    (3f620843)."""
    space = {"cluster.models.0.replicas": [2, 4]}
    hashes = [load_spec(data={"base": base, "trace": {"limit": 50}, "space": space, "seeds": [0, 1]}).hash
              for base in ({}, {"cluster.models.0.num_kv_blocks": 8192})]
    assert hashes == ["853534fdd18390c77c7f2b71", "fa6046a820c84e5655c4b6de"]
