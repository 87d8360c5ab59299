"""A sweep's trace transforms as axes of its space (sim/sweep/spec_trace.py, sim/sweep/run.py)."""

from __future__ import annotations

import pytest

from controlplane.config import RunConfig
from controlplane.errors import ConfigError
from controlplane.storage import make_engine
from sim.replay import TraceTransforms, replay
from sim.sweep import load_spec, run_sweep
from sim.sweep.search import search
from sim.sweep.store import sweep_runs

SPEC = {"name": "growth", "trace": {"window_end_s": 120}, "seeds": [0, 1],
        "space": {"trace.rate_scale": [1, 3], "cluster.models.0.replicas": [1]}}
VOLATILE = ("run_id", "wall_s")


def _runs(db: str, sweep_id: int) -> list[dict]:
    engine = make_engine(db)
    try:
        return sweep_runs(engine, sweep_id)
    finally:
        engine.dispose()


def test_a_swept_rate_scale_replays_what_a_replay_with_that_rate_scale_replays(tmp_path):
    """`space: {trace.rate_scale: [1, 3]}` failed every point with `invalid configuration: trace: Extra inputs
    are not permitted`; each point now replays the spec's trace with its rate scale, as `sim replay
    --window-end 120 --rate-scale 3` does, under each seed."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    result = run_sweep(loaded, db, backend="serial")
    assert (result.total, result.ran, result.failed) == (4, 4, {})
    runs = _runs(db, result.sweep_id)
    by = {(r["overrides"]["trace.rate_scale"], r["seed"]): r for r in runs}
    assert by[(3, 0)]["summary"]["num_requests"] > 2 * by[(1, 0)]["summary"]["num_requests"]
    for (scale, seed), run in by.items():
        config = RunConfig(**{**loaded.run_config({"cluster.models.0.replicas": 1}, seed),
                              "storage": {"url": f"sqlite:///{tmp_path / 'alone.db'}"}})
        alone = replay(loaded.trace_path(), config, trace_format="azure",
                       transforms=TraceTransforms(window_end_s=120, rate_scale=scale))
        mine = {k: v for k, v in run["summary"].items() if k not in VOLATILE}
        assert mine == {k: v for k, v in alone.summary.items() if k not in VOLATILE}, (scale, seed)
        assert run["config"]["trace_read"] == {"transforms": {"window_end_s": 120.0, "rate_scale": float(scale)}}


def test_a_sweep_over_the_rate_resumes_and_its_points_are_told_apart_by_the_rate(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {**SPEC, "seeds": [0]}
    first = run_sweep(load_spec(data={**spec, "space": {**spec["space"], "trace.rate_scale": [1]}}), db,
                      backend="serial")
    points = load_spec(data=spec).points()
    assert len({p.key for p in points}) == 2
    again = run_sweep(load_spec(data=spec), db, backend="serial")
    assert again.sweep_id != first.sweep_id  # (another space: another sweep)
    resumed = run_sweep(load_spec(data=spec), db, backend="serial")
    assert (resumed.sweep_id, resumed.resumed, resumed.ran, resumed.skipped) == (again.sweep_id, True, 0, 2)


def test_a_bundle_may_set_trace_transforms_with_config_keys(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {**SPEC, "seeds": [0], "space": {"load": [
        {"trace.rate_scale": 1, "cluster.models.0.replicas": 1},
        {"trace.rate_scale": 2, "trace.speed_up": 2, "cluster.models.0.replicas": 2}]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    reads = sorted((r["config"]["cluster"]["models"][0]["replicas"], r["config"]["trace_read"]["transforms"])
                   for r in _runs(db, result.sweep_id))
    assert reads == [(1, {"window_end_s": 120.0, "rate_scale": 1.0}),
                     (2, {"window_end_s": 120.0, "speed_up": 2.0, "rate_scale": 2.0})]


@pytest.mark.parametrize(("space", "said"), [
    ({"trace.rate_scale": [1, 0]}, "sweep point {'trace.rate_scale': 0}: trace.rate_scale must be a finite number > 0, "
                                   "got 0"),
    ({"trace.window_end_s": [60, 10]}, "sweep point {'trace.window_end_s': 10}: trace.window_end_s (10) must be greater "
                                       "than trace.window_start_s (20)"),
    ({"trace.copies": ["clumped", "piled"]}, "sweep point {'trace.copies': 'piled'}: trace.copies: Input should be "
                                             "'clumped', 'shuffled' or 'shifted'"),
])
def test_a_bad_swept_transform_value_is_refused_when_the_spec_loads(space, said):
    with pytest.raises(ConfigError) as caught:
        load_spec(data={"trace": {"window_start_s": 20}, "space": space})
    assert str(caught.value) == f"sweep spec: {said}"


@pytest.mark.parametrize("key", ["trace.path", "trace.format", "trace.options.qps"])
def test_the_traces_file_format_and_options_are_not_axes(key):
    with pytest.raises(ConfigError) as caught:
        load_spec(data={"space": {key: [1, 2]}})
    assert f"space.{key}: a sweep replays one trace, read one way" in str(caught.value)
    assert "runs compare --a-sweep A --b-sweep B" in str(caught.value)


def test_an_unknown_trace_key_in_the_space_is_named():
    with pytest.raises(ConfigError) as caught:
        load_spec(data={"space": {"trace.rate_scal": [1, 2]}})
    assert "space.trace.rate_scal: not a trace transform; the space may sweep trace.window_start_s" in str(caught.value)


def test_a_search_over_the_rate_is_refused_before_the_trace_is_read(monkeypatch):
    import sim.sweep.search

    monkeypatch.setattr(sim.sweep.search, "read_traces", lambda *a, **k: pytest.fail("the trace was read"))
    with pytest.raises(ConfigError) as caught:
        search(load_spec(data={**SPEC, "base": {"slo": {"ttft_s": 2, "tpot_s": 0.2}}}), backend="serial")
    assert str(caught.value).startswith("sweep spec: space.trace.rate_scale: a search finds the cheapest configuration "
                                        "for one traffic")


def test_the_docs_example_of_traffic_as_an_axis_loads(tmp_path):
    import re
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", (root / "docs" / "sweeps.md").read_text(), re.S)
                if "trace.rate_scale" in b]
    shutil.copy(root / "examples" / "cluster.yaml", tmp_path / "cluster.yaml")
    (tmp_path / "growth.yaml").write_text(block)
    points = load_spec(tmp_path / "growth.yaml").points()
    assert sorted((p.overrides["trace.rate_scale"], p.overrides["cluster.models.0.replicas"]) for p in points) == [
        (r, n) for r in (1, 2, 3) for n in (2, 4, 8)]
