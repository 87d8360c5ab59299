"""`run_sweep`: points and seeds, stored under one sweep id by the driver, identical on every
backend, resumable."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import delete, func, insert, select, update

from controlplane.errors import ConfigError
from controlplane.storage import make_engine
from controlplane.storage.models import Request, Run, Sweep
from sim.sweep import load_spec, run_sweep
from sim.sweep.backends import Backend
from sim.sweep.run import SweepInterrupted
from sim.sweep.spec import apply_dotted
from sim.sweep.store import sweep_runs
from sim.sweep.worker import RunOutcome, RunTask

SPEC = {
    "name": "tiny",
    "trace": {"limit": 150},
    "seeds": [0, 1],
    "space": {
        "cluster.models.0.replicas": [1, 3],
        "plugins.settings.continuous-batching.policy": ["vllm", "sarathi"],
    },
}
VOLATILE = ("run_id", "wall_s")  # the run's id in its database and the wall time of its replay


def _summaries(db: str, sweep_id: int) -> dict[str, dict]:
    engine = make_engine(db)
    try:
        return {r["sweep_key"]: {k: v for k, v in r["summary"].items() if k not in VOLATILE}
                for r in sweep_runs(engine, sweep_id)}
    finally:
        engine.dispose()


def test_grid_points_expand_bundles_and_seeds():
    loaded = load_spec(data={**SPEC, "space": {**SPEC["space"], "hw": [
        {"cluster.models.0.gpu": "a100-80gb", "cluster.models.0.precision": "fp16"},
        {"cluster.models.0.gpu": "h100-80gb", "cluster.models.0.precision": "int8"}]}})
    points = loaded.points()
    assert len(points) == 2 * 2 * 2 * 2  # replicas x policy x bundle x seeds
    assert len({p.key for p in points}) == len(points)
    cfg = loaded.run_config(points[-1].overrides, points[-1].seed)
    assert cfg["cluster"]["models"][0]["gpu"] == "h100-80gb" and cfg["cluster"]["models"][0]["precision"] == "int8"
    assert cfg["cluster"]["models"][0]["replicas"] == 3 and cfg["seed"] == 1


def test_random_points_are_drawn_from_lists_and_ranges():
    loaded = load_spec(data={"mode": "random", "samples": 6, "sample_seed": 3, "space": {
        "cluster.models.0.replicas": {"low": 1, "high": 8, "int": True},
        "control.tick_s": {"low": 0.1, "high": 10, "log": True}}})
    points = loaded.spec.points()
    assert 1 <= len(points) <= 6
    assert all(1 <= p["cluster.models.0.replicas"] <= 8 and 0.1 <= p["control.tick_s"] <= 10 for p in points)
    assert load_spec(data=loaded.spec.model_dump()).spec.points() == points  # the same draws for the same seed


@pytest.mark.parametrize("space, message", [
    ({"cluster.models.3.replicas": [1]}, "cluster.models.3: index 3 out of range"),
    ({"cluster.models.0.replicaz": [1]}, "replicaz"),
    ({"cluster.models.0.replicas": [-1]}, "cluster.models.0.replicas"),
    ({"replicas": [1, 2]}, "space.replicas: a key without a dot is a bundle"),
    ({"cluster.models.0.replicas": 4}, "space.cluster.models.0.replicas: 4 is one value; give a list"),
    ({"cluster.models.0.replicas": [2, 2, 6]}, "space.cluster.models.0.replicas: 2 listed more than once"),  # (was
    # silently one point fewer)
    ({"cluster.models.0.replicas": []}, "invalid sweep spec: space.cluster.models.0.replicas: no values$"),
])
def test_bad_keys_and_values_are_named(space, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_spec(data={"space": space})


@pytest.mark.parametrize("space, message", [
    ({"gpu": ["h100-80gb"]}, "space.gpu: a key without a dot is a bundle, its values must be mappings of dotted keys "
                             "(e.g. {cluster.models.0.gpu: h100-80gb})"),  # (was {{...}}, and 'sweep spec sweep spec')
    ({"seed": [0, 1]}, "space.seed: seeds are not a space key; list them as `seeds: [0, 1]` (every point runs once "
                       "per seed)"),  # (was the bundle's error)
])
def test_a_bundle_s_error_shows_its_example_and_a_seed_key_points_to_seeds(space, message):
    with pytest.raises(ConfigError) as raised:
        load_spec(data={"space": space})
    assert str(raised.value) == f"invalid sweep spec: {message}"


@pytest.mark.parametrize("trace, message", [
    ({"format": "burstgtp"}, "trace: format: unknown trace format 'burstgtp'; valid formats: azure, "
                             "mooncake, vidur, canonical, burstgpt, bailian"),
    ({"format": "burstgpt", "options": {"failed": "drop", "spread": "none"}},
     "trace: options: unknown option(s) 'spread' for trace format 'burstgpt'; valid options: models, "
     "log_types, failed, model_column"),
    ({"format": "azure", "options": {"qps": 2}},  # (it said "valid options: " and nothing after it)
     "trace: options: unknown option(s) 'qps' for trace format 'azure'; valid options: max_gap_s"),
])
def test_a_bad_trace_format_or_option_is_named_when_the_spec_loads(trace, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(data={"trace": trace})
    assert load_spec(data={"trace": {"format": "burstgpt", "options": {"failed": "drop"}}}).spec.trace.options == {
        "failed": "drop"}


def test_a_missing_trace_file_is_refused_before_the_database_is_touched(tmp_path):
    """It stored a sweep row marked failed first."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {path: nothere.csv, format: azure}\nspace:\n  cluster.models.0.replicas: [1]\n")
    with pytest.raises(ConfigError, match=rf"^{spec}: trace\.path: trace file not found: nothere\.csv$"):
        run_sweep(load_spec(spec), f"sqlite:///{tmp_path / 'runs.db'}", backend="serial")
    assert not (tmp_path / "runs.db").exists()


def test_a_trace_with_a_bad_row_is_refused_before_the_database_is_touched(tmp_path):
    """It stored a sweep row marked failed, no run in it, and `runs sweeps` listed it `failed 0/2`."""
    from sim.traces import TraceFormatError

    rows = [f"r{i},{i * 0.5},{200 + i},50" for i in range(50)] + ["bad,30.0,abc,50"]
    (tmp_path / "bad.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"trace: {{path: {tmp_path / 'bad.csv'}, format: canonical}}\n"
                    "space:\n  cluster.models.0.replicas: [1, 2]\n")
    with pytest.raises(TraceFormatError, match=r"bad\.csv:52: field 'prompt_tokens'"):
        run_sweep(load_spec(spec), f"sqlite:///{tmp_path / 'runs.db'}", backend="serial")
    assert not (tmp_path / "runs.db").exists()


def test_samples_in_a_grid_is_refused_and_random_counts_its_repeated_draws():
    """A grid with `samples: 3` ran the whole grid without a word."""
    with pytest.raises(ConfigError, match=r"samples: 3 is for mode: random \(draw that many points\); a grid runs every "
                                          r"combination: drop samples, or set mode: random"):
        load_spec(data={"samples": 3, "space": {"cluster.models.0.replicas": [1, 2]}})
    drawn = load_spec(data={"mode": "random", "samples": 5, "space": {"cluster.models.0.replicas": [2, 3]}}).spec
    assert len(drawn.points()) == 2 and drawn.repeated_draws() == 3
    assert load_spec(data={"space": {"cluster.models.0.replicas": [2, 3]}}).spec.repeated_draws() == 0


def test_a_seed_listed_twice_is_refused_before_anything_runs():
    """It made two runs with one key: the sweep failed on the database's unique index mid-way."""
    with pytest.raises(ConfigError, match=r"^invalid sweep spec: seeds: 0 listed more than once"):
        load_spec(data={"seeds": [0, 1, 0], "space": {"cluster.models.0.replicas": [1]}})


def test_a_bad_value_of_the_space_is_one_line_naming_the_spec_its_key_and_value(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("space:\n  cluster.models.0.replicas: [2, four]\n"
                    "  plugins.settings.continuous-batching.policy: [vllm, sarathi]\n")
    with pytest.raises(ConfigError) as bad:
        load_spec(spec)
    assert str(bad.value) == (f"{spec}: sweep point {{'cluster.models.0.replicas': 'four'}}: invalid configuration: "
                              "cluster.models.0.replicas: Input should be a valid integer, unable to parse string as "
                              "an integer")
    spec.write_text("space:\n  cluster.models.0.replicas: [2, four, 6]\n")  # (a point load_spec does not try)
    with pytest.raises(ConfigError, match=rf"^{spec}: sweep point {{'cluster.models.0.replicas': 'four'}}: "):
        run_sweep(load_spec(spec), f"sqlite:///{tmp_path / 'runs.db'}", backend="serial")
    assert not (tmp_path / "runs.db").exists()


def test_apply_dotted_sets_list_items_and_creates_settings():
    out = apply_dotted({"cluster": {"models": [{"replicas": 2}]}, "plugins": {"settings": {}}},
                       {"cluster.models.0.replicas": 5, "plugins.settings.queue-limit.max_queued_per_replica": 3})
    assert out == {"cluster": {"models": [{"replicas": 5}]},
                   "plugins": {"settings": {"queue-limit": {"max_queued_per_replica": 3}}}}


def test_sweep_stores_every_run_with_its_rows(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = run_sweep(load_spec(data=SPEC), db, backend="pool", workers=2)
    assert (result.total, result.ran, result.skipped) == (8, 8, 0)
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status)).scalar_one() == "finished"
        runs = conn.execute(select(Run.id, Run.summary, Run.sweep_id, Run.status)).all()
        counts = dict(conn.execute(select(Request.run_id, func.count()).group_by(Request.run_id)).all())
    engine.dispose()
    assert len(runs) == 8 and {r.sweep_id for r in runs} == {result.sweep_id}
    assert all(r.status == "finished" and counts[r.id] == r.summary["num_requests"] == 150 for r in runs)
    summaries = _summaries(db, result.sweep_id)
    one = [s for s in summaries.values()]
    assert len({json.dumps(s, sort_keys=True) for s in one}) > 1  # the points differ


def test_pool_and_ray_give_identical_summaries(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    pool = run_sweep(loaded, db, backend="pool", workers=2)
    ray = run_sweep(loaded, db, backend="ray", workers=2, fresh=True)
    assert ray.backend == "ray" and pool.backend == "pool" and ray.sweep_id != pool.sweep_id
    a, b = _summaries(db, pool.sweep_id), _summaries(db, ray.sweep_id)
    assert len(a) == 8 and a == b
    serial = run_sweep(loaded, db, backend="serial", fresh=True)
    assert _summaries(db, serial.sweep_id) == a


class _Interrupting(Backend):
    """Runs serially and is interrupted (Ctrl-C) after ``after`` runs."""

    def __init__(self, after: int) -> None:
        self.after = after

    def run(self, tasks: Sequence[RunTask], traces) -> Iterator[RunOutcome]:
        for i, outcome in enumerate(super().run(tasks, traces)):
            if i == self.after:
                raise KeyboardInterrupt
            yield outcome


def test_a_sweep_result_reads_its_runs_and_their_summaries_back(tmp_path):
    # (it held only run ids, while `sim sweep --json` printed each run's summary)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data={**SPEC, "seeds": [0]})
    result = run_sweep(loaded, db, backend="serial")
    runs = result.runs()
    assert [r["id"] for r in runs] == sorted(result.run_ids.values()) and len(runs) == 4
    assert {r["sweep_key"] for r in runs} == set(result.run_ids)
    for r in runs:
        assert r["status"] == "finished" and r["summary"]["run_id"] == r["id"]
        assert r["summary"]["num_requests"] == 150 and set(r["overrides"]) == set(SPEC["space"])
    again = run_sweep(loaded, db, backend="serial")  # a resume that runs nothing reads every run back too
    assert again.run_ids == {} and [r["id"] for r in again.runs()] == [r["id"] for r in runs]
    engine = make_engine(db)
    try:
        assert again.runs(engine) == runs
    finally:
        engine.dispose()


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    with pytest.raises(SweepInterrupted) as interrupted:
        run_sweep(loaded, db, backend=_Interrupting(3))
    assert isinstance(interrupted.value, KeyboardInterrupt)
    assert (interrupted.value.sweep_id, interrupted.value.stored, interrupted.value.total) == (1, 3, 8)
    engine = make_engine(db)
    with engine.begin() as conn:
        sweep_id, status = conn.execute(select(Sweep.id, Sweep.status)).one()
        assert status == "interrupted"
        assert conn.execute(select(func.count()).select_from(Run)).scalar_one() == 3
        # A run cut off while the driver was writing it: not finished, so done again.
        cut = conn.execute(select(Run.id).order_by(Run.id.desc()).limit(1)).scalar_one()
        conn.execute(update(Run).where(Run.id == cut).values(status="running"))
    resumed = run_sweep(loaded, db, backend="serial")
    assert resumed.sweep_id == sweep_id and resumed.resumed
    assert (resumed.skipped, resumed.ran) == (2, 6)
    with engine.connect() as conn:
        keys = [r[0] for r in conn.execute(select(Run.sweep_key).where(Run.sweep_id == sweep_id))]
        assert conn.execute(select(Sweep.status)).scalar_one() == "finished"
        assert {r[0] for r in conn.execute(select(Run.status))} == {"finished"}  # the cut-off run was replaced
        assert conn.execute(select(func.count()).select_from(Run)).scalar_one() == 8
    engine.dispose()
    assert sorted(keys) == sorted(p.key for p in loaded.points())
    again = run_sweep(loaded, db, backend="serial")
    assert (again.ran, again.skipped) == (0, 8)
    fresh = run_sweep(loaded, db, backend="serial", fresh=True)
    assert fresh.sweep_id != sweep_id and fresh.ran == 8
    assert _summaries(db, fresh.sweep_id) == _summaries(db, sweep_id)


def test_a_resume_with_nothing_to_run_keeps_the_sweeps_end(tmp_path):
    """Its `ended` was rewritten to the resume's time: an 18 s sweep read as created 02:05:07, ended 02:26:28."""
    from datetime import datetime, timezone

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data={**SPEC, "seeds": [0], "space": {"cluster.models.0.replicas": [1, 2]}})
    first = run_sweep(loaded, db, backend="serial")
    engine = make_engine(db)
    ended = datetime(2026, 12, 7, 2, 5, 25, tzinfo=timezone.utc)  # (a known end, so the check reads no clock)
    with engine.begin() as conn:
        conn.execute(update(Sweep).where(Sweep.id == first.sweep_id).values(finished_at=ended))
    again = run_sweep(loaded, db, backend="serial")
    assert (again.sweep_id, again.resumed, again.ran) == (first.sweep_id, True, 0)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status, Sweep.finished_at)).one() == ("finished", ended)
        conn.execute(delete(Run).where(Run.id == first.run_ids[next(iter(first.run_ids))]))
        conn.commit()
    rerun = run_sweep(loaded, db, backend="serial")  # one run to do again: the sweep ends anew
    assert rerun.ran == 1
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.finished_at)).scalar_one() > ended
    engine.dispose()


class _SigintHalfway(list):
    """A run's rows that send this process SIGINT (a real Ctrl-C) when the driver is halfway through them."""

    def __iter__(self) -> Iterator:
        for i, row in enumerate(list.__iter__(self)):
            if i == len(self) // 2:
                signal.raise_signal(signal.SIGINT)
            yield row


class _CtrlCWhileWriting(Backend):
    """Runs serially; Ctrl-C comes while the driver writes the second run's request rows."""

    def run(self, tasks: Sequence[RunTask], traces) -> Iterator[RunOutcome]:
        for i, outcome in enumerate(super().run(tasks, traces)):
            if i == 1:
                outcome.rows = {**outcome.rows, "request": _SigintHalfway(outcome.rows["request"])}
            yield outcome


def test_ctrl_c_while_a_run_is_written_stores_it_whole_then_stops(tmp_path):
    """Cut mid-write, SQLite's write lock stayed held: the sweep could not be marked and the rows
    were spilled; now the run being written is finished first."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    with pytest.raises(SweepInterrupted) as interrupted:
        run_sweep(loaded, db, backend=_CtrlCWhileWriting())
    assert (interrupted.value.stored, interrupted.value.total) == (2, 8)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status)).scalar_one() == "interrupted"
        runs = conn.execute(select(Run.id, Run.status, Run.summary)).all()
        counts = dict(conn.execute(select(Request.run_id, func.count()).group_by(Request.run_id)).all())
    engine.dispose()
    assert [r.status for r in runs] == ["finished", "finished"]
    assert all(counts[r.id] == r.summary["num_requests"] == 150 for r in runs)
    resumed = run_sweep(loaded, db, backend="serial")
    assert (resumed.skipped, resumed.ran) == (2, 6)


def test_the_sweep_table_and_run_columns_exist_after_migration(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    from controlplane.storage import ensure_schema
    from datetime import datetime, timezone

    ensure_schema(engine)
    with engine.begin() as conn:
        sid = conn.execute(insert(Sweep).values(kind="grid", status="running", spec={}, spec_hash="h",
                                                created_at=datetime.now(timezone.utc))).inserted_primary_key[0]
        assert sid == 1
    engine.dispose()


def test_a_point_whose_run_raises_is_stored_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr("sim.sweep.spec.check_points", lambda *a: None)  # (the spec's own check refuses it first)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data={"trace": {"limit": 60},
                             "space": {"cluster.models.0.latency_model": ["linear", "nonsense"]}})  # refused by the run
    result = run_sweep(loaded, db, backend="pool", workers=2)
    assert result.ran == 2 and len(result.failed) == 1
    (error,) = result.failed.values()
    assert "cluster.models[default].latency_model: unknown latency model 'nonsense'" in error
    engine = make_engine(db)
    with engine.connect() as conn:
        statuses = sorted(r[0] for r in conn.execute(select(Run.status)))
        assert statuses == ["failed", "finished"]
        assert conn.execute(select(Sweep.status)).scalar_one() == "failed"  # (was `finished`, as if all ran)
    engine.dispose()
    again = run_sweep(loaded, db, backend="serial")  # a resumed sweep tries the failed point again
    assert (again.skipped, again.ran, len(again.failed)) == (1, 1, 1)


def test_a_sweep_run_row_keeps_the_database_url_without_its_password():
    from controlplane.session import without_password

    config = {"seed": 1, "storage": {"url": "postgresql+psycopg://runs:s3cret@db/runs", "batch_size": 10}}
    kept = without_password(config)
    assert kept["storage"] == {"url": "postgresql+psycopg://runs:***@db/runs", "batch_size": 10}
    assert config["storage"]["url"].endswith("s3cret@db/runs")  # the run itself still connects with it
    assert without_password({"seed": 1}) == {"seed": 1}


def test_a_sweeps_runs_name_their_process_and_its_start_marks_runs_of_dead_processes_crashed(tmp_path):
    import os
    import subprocess
    import sys
    from datetime import datetime, timezone

    from controlplane.storage import upgrade
    from controlplane.storage.owner import process_marker

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(db)
    upgrade(engine)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with engine.begin() as conn:  # a sweep's run killed while the driver wrote it
        conn.execute(insert(Run).values(mode="sim", status="running", config={"process": {**process_marker(),
                     "pid": dead.pid, "start_ticks": None}}, plugins=[], started_at=datetime.now(timezone.utc)))
    spec = {"name": "one", "trace": {"limit": 20}, "seeds": [0], "space": {"cluster.models.0.replicas": [1]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    with engine.connect() as conn:
        runs = {r.id: r for r in conn.execute(select(Run.id, Run.status, Run.config, Run.summary, Run.sweep_id))}
    engine.dispose()
    assert runs[1].status == "crashed" and runs[1].summary["requests_recorded"] == 0
    (stored,) = [r for r in runs.values() if r.sweep_id == result.sweep_id]
    assert stored.status == "finished" and stored.config["process"]["pid"] == os.getpid()


def test_a_sweeps_runs_store_how_the_trace_was_read(tmp_path):
    """The spec's transforms and format options go into each run's config as ``trace_read``, as a replay's do
    (`controlplane runs show` prints them): each run names the requests it replayed."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "read", "trace": {"limit": 20, "speed_up": 2, "rate_profile": "0:1,60:2", "output_scale": 0.5,
                                      "max_prompt_tokens": 512, "max_output_tokens": 64},
            "seeds": [0],
            "space": {"cluster.models.0.replicas": [1]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    plain = run_sweep(load_spec(data={**spec, "name": "plain", "trace": {"limit": 20}}), db, backend="serial")
    engine = make_engine(db)
    with engine.connect() as conn:
        configs = {r.sweep_id: r.config for r in conn.execute(select(Run.sweep_id, Run.config))}
    engine.dispose()
    assert configs[result.sweep_id]["trace_read"] == {
        "transforms": {"speed_up": 2.0, "limit": 20, "rate_profile": "0:1,60:2", "output_scale": 0.5,
                       "max_prompt_tokens": 512, "max_output_tokens": 64}}
    assert configs[plain.sweep_id]["trace_read"] == {"transforms": {"limit": 20}}


def test_a_sweeps_runs_count_the_rows_their_trace_read_left_out(tmp_path):
    """A format option that leaves rows out (BurstGPT's ``failed: drop``) is counted in each run's summary as
    ``trace_rows_left_out``, as a replay's is; a spec that leaves nothing out stores no such key."""
    trace = tmp_path / "burst.csv"
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,0,1087,Conversation log\n"
                     "118.5,GPT-4,417,276,693,API log\n118.5,ChatGPT,30,7,37,API log\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "drop", "trace": {"path": str(trace), "format": "burstgpt", "options": {"failed": "drop"}},
            "seeds": [0, 1], "space": {"cluster.models.0.replicas": [1, 2]}}
    dropped = run_sweep(load_spec(data=spec), db, backend="serial")
    kept = run_sweep(load_spec(data={**spec, "name": "keep", "trace": {"path": str(trace)}}), db, backend="serial")
    engine = make_engine(db)
    with engine.connect() as conn:
        summaries = [(r.sweep_id, r.summary) for r in conn.execute(select(Run.sweep_id, Run.summary))]
    engine.dispose()
    assert [s["trace_rows_left_out"] for i, s in summaries if i == dropped.sweep_id] == [{"failed": 1}] * 4
    assert [s["num_requests"] for i, s in summaries if i == dropped.sweep_id] == [3] * 4
    assert not any("trace_rows_left_out" in s for i, s in summaries if i == kept.sweep_id)


def test_a_sweeps_runs_store_the_latency_profile_they_were_simulated_on(tmp_path, monkeypatch):
    """As a replay's run does (`sim.replay.latency_files`): the measured profile's path and SHA-256."""
    import hashlib

    from sim.latency.measured import write_profile
    from tests.sim.latency.test_other_models import _rows

    monkeypatch.chdir(tmp_path)
    path = write_profile(tmp_path / "profile.json", _rows(), {"model": "m", "device": "d"})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "measured", "trace": {"limit": 20}, "seeds": [0], "space": {"cluster.models.0.replicas": [1, 2]},
            "base": {"cluster": {"models": [{"name": "default", "latency_model": "measured",
                                             "latency": {"path": "profile.json"}}]}}}
    run_sweep(load_spec(data=spec), db, backend="serial")
    engine = make_engine(db)
    with engine.connect() as conn:
        stored = [r.config["latency_files"] for r in conn.execute(select(Run.config))]
    engine.dispose()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert stored == [{"default": {"path": "profile.json", "sha256": digest}}] * 2


def test_a_sweep_resumes_on_the_same_trace_file_by_any_path_and_not_on_other_rows_under_its_name(tmp_path, monkeypatch):
    from sim.traces import bundled_trace_path

    header, *rows = bundled_trace_path().read_text().splitlines()
    (tmp_path / "data").mkdir()
    trace = tmp_path / "data" / "t.csv"
    trace.write_text("\n".join([header, *rows[:20]]) + "\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "file", "trace": {"path": "data/t.csv", "format": "azure"}, "seeds": [0],
            "space": {"cluster.models.0.replicas": [1, 2]}}
    monkeypatch.chdir(tmp_path)
    first = run_sweep(load_spec(data=spec), db, backend="serial")
    monkeypatch.chdir(tmp_path / "data")  # the same file, named from its own folder
    same = run_sweep(load_spec(data=spec), db, backend="serial", trace_path="t.csv")
    assert (same.resumed, same.sweep_id, same.ran) == (True, first.sweep_id, 0)
    trace.write_text("\n".join([header, *rows[20:40]]) + "\n")  # other rows under the same name
    other = run_sweep(load_spec(data=spec), db, backend="serial", trace_path="t.csv")
    assert (other.resumed, other.ran) == (False, 2) and other.sweep_id != first.sweep_id  # was: nothing to run


def test_a_sweeps_rows_get_their_guardian_verdicts_after_the_reply(tmp_path):
    """Async answer checks end after the reply: their final verdict reaches the kept rows, as a replay's
    (`controlplane.verdict_after_reply`); the sweep's rows stayed `pending`."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    guard = "plugins.settings.sampled-guardian"
    spec = {"name": "guarded", "trace": {"limit": 60}, "seeds": [0],
            "space": {"sim.guardian_block_rate": [0.3], f"{guard}.rate": [1.0], f"{guard}.mode": ["async"],
                      f"{guard}.guardian": ["judge"], "cluster.models.0.replicas": [2]}}
    result = run_sweep(load_spec(data=spec), db, backend="serial")
    engine = make_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(select(Request.guardian_verdict, Request.reason).where(
            Request.guardian_verdict.is_not(None))).all()
    engine.dispose()
    assert result.ran == 1 and len(rows) > 40
    assert {v for v, _ in rows} == {"pass", "block"}  # none left pending
    assert all(reason.startswith("retracted: blocked after the reply by judge") for v, reason in rows if v == "block")
