"""`runs compare`'s workload note: docs/calibration.md's step 4 compares a live run of a trace window with a
replay of that run's `--save-trace` file, exactly the requests it served; the note said they "replayed
different requests" because the trace's name and transforms read differently. Runs whose stored requests are
the same ones get no note now; runs of truly different requests still do."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.runs_notes import same_requests
from controlplane.storage import get_run, make_engine
from controlplane.testing import make_config, make_trace
from sim.traces import TraceRequest
from sim.traces.canonical import write_canonical


def _compare(url: str, a: int, b: int) -> str:
    res = CliRunner().invoke(app, ["runs", "compare", str(a), str(b), "--no-ci", "--db", url], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: a window of a trace file, lengths capped; run 2: its requests as served (what `live-replay
    --save-trace` writes: arrivals on another clock, the first 0.125 s in); run 3: the same with one prompt longer."""
    from sim.replay import TraceTransforms, replay

    folder = tmp_path_factory.mktemp("workload")
    url = f"sqlite:///{folder / 'runs.db'}"
    trace = folder / "trace.csv"
    write_canonical(make_trace(80, qps=2), trace)
    window = TraceTransforms(window_start_s=5.0, window_end_s=30.0, max_prompt_tokens=256)
    replay(str(trace), make_config(storage={"url": url}), transforms=window)
    engine = make_engine(url)
    try:
        from controlplane.storage.queries import iter_request_rows

        rows = list(iter_request_rows(engine, 1))
    finally:
        engine.dispose()
    start = min(r["arrival_s"] for r in rows) - 0.125  # (another clock: its first request 0.125 s in)
    served = [TraceRequest(r["request_id"], r["arrival_s"] - start, r["prompt_tokens"], r["max_output_tokens"])
              for r in rows]
    served.sort(key=lambda r: r.arrival_s)
    write_canonical(served, folder / "served.csv")
    longer = [dataclasses.replace(r, prompt_tokens=r.prompt_tokens + 1) if i == 3 else r for i, r in enumerate(served)]
    write_canonical(longer, folder / "other.csv")
    for name in ("served.csv", "other.csv"):
        replay(str(folder / name), make_config(storage={"url": url}))
    return url


def test_a_replay_of_the_requests_a_run_served_is_the_same_workload(runs):
    assert "different requests" not in _compare(runs, 1, 2)
    assert "different requests" not in _compare(runs, 2, 1)


def test_runs_of_other_requests_still_get_the_note(runs):
    text = _compare(runs, 1, 3)
    assert "note: the runs replayed different requests" in text and "run 3: other.csv" in text
    assert "different requests" in _compare(runs, 2, 3)


def test_same_requests_needs_every_run_s_rows(runs):
    engine = make_engine(runs)
    try:
        one, two = get_run(engine, 1), get_run(engine, 2)
        assert same_requests(engine, one, two)
        # runs whose rows are not all stored (a crash: fewer rows than its requests) cannot tell
        unstored = {**one["summary"], "num_requests": one["summary"]["num_requests"] + 1}
        assert not same_requests(engine, {**one, "summary": unstored}, {**two, "summary": unstored})
        assert not same_requests(engine, one, {**two, "summary": unstored})
    finally:
        engine.dispose()


def _without(url: str, folder, sql: str) -> str:
    """A copy of the database at ``url`` with ``sql`` run in it."""
    import shutil
    import sqlite3

    from sqlalchemy.engine import make_url

    copy = folder / "copy.db"
    shutil.copy(make_url(url).database, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute(sql)
    return f"sqlite:///{copy}"


def test_requests_stored_before_revision_0004_match_on_what_both_runs_stored(runs, tmp_path):
    """`max_output_tokens` (revision 0004) is NULL on every request stored before it: a live run of an older release
    beside the replay of its `--save-trace` file "replayed different requests" (NULL is not 8)."""
    old = _without(runs, tmp_path, "UPDATE request SET max_output_tokens = NULL WHERE run_id = 1")
    assert "different requests" not in _compare(old, 1, 2)
    assert "note: the runs replayed different requests" in _compare(old, 1, 3)  # (its prompt lengths differ)


def test_runs_whose_transforms_were_not_stored_are_told_apart_by_their_requests(runs, tmp_path):
    """A run of a release of revision 0002 stored no `trace_read`: it read as having no transforms."""
    old = _without(runs, tmp_path, "UPDATE run SET config = json_remove(config, '$.trace_read', '$.process') "
                                   "WHERE id IN (1, 3)")
    assert "different requests" not in _compare(old, 1, 2)  # (its requests are the same ones)
    assert "note: the runs replayed different requests (run 1: trace.csv (transforms unknown); run 3: other.csv " \
           "(transforms unknown))" in _compare(old, 1, 3)


def test_runs_of_one_trace_whose_transforms_were_not_stored_may_differ():
    """Without their requests to tell, two runs of one trace file that stored no transforms read the same workload."""
    from controlplane.cli.runs_notes import workload_note

    old = [{"id": i, "trace": "/data/code.csv", "config": {"seed": 0}, "summary": {}} for i in (1, 2)]
    assert workload_note(old).startswith("note: the runs may have replayed different requests (run 1: code.csv "
                                         "(transforms unknown); run 2: code.csv (transforms unknown): how they read ")
    new = [{**r, "config": {"process": {}}} for r in old]
    assert workload_note(new) == ""


def test_a_run_stored_with_its_trace_as_typed_reads_the_same_workload_as_one_stored_absolute():
    """Runs stored before replays kept their trace's absolute path hold it as typed ("az trace.csv"): the note
    tells workloads by the trace file's name, so such a run and a later one of the same file pair."""
    from controlplane.cli.runs_notes import workload_note

    read = {"process": {}, "trace_read": {"transforms": {"limit": 10}}}
    runs = [{"id": 1, "trace": "az trace.csv", "config": read, "summary": {}},
            {"id": 2, "trace": "/home/me/proj dir/az trace.csv", "config": read, "summary": {}}]
    assert workload_note(runs) == ""
    other = {**runs[1], "id": 3, "config": {"process": {}, "trace_read": {"transforms": {"limit": 20}}}}
    assert "run 1: az trace.csv (limit=10); run 3: az trace.csv (limit=20)" in workload_note([runs[0], other])


def test_runs_whose_seeds_drew_different_requests_of_one_trace_read_one_way_get_a_note(tmp_path):
    """`--rate-scale 0.8` with seeds 1 and 2: each seed thins its own 80% (801 of 1,000 ids shared), yet the runs'
    workloads read the same (the same transforms), so no note said they replayed different requests."""
    import json

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for seed in ("1", "2", "1"):
        done = CliRunner().invoke(app, ["sim", "replay", "--limit", "120", "--rate-scale", "0.8", "--seed", seed,
                                        "--db", url, "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    res = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", url, "--json", "--resamples", "100"])
    found = json.loads(res.stdout)
    assert found["workloads_differ"] is True
    assert found["workloads_note"].startswith("note: the runs read the trace the same way but replayed different "
                                              "requests (run 1: AzureLLMInferenceTrace_code.csv (limit=120, "
                                              "rate_scale=0.8); run 2: ")
    assert {m["method"] for m in found["metrics"]} == {"independent"}
    same = json.loads(CliRunner().invoke(app, ["runs", "compare", "1", "3", "--db", url, "--json", "--no-ci"]).stdout)
    assert same["workloads_differ"] is False  # (one seed: the same requests)


def test_several_seeds_a_side_compare_each_seeds_runs_with_each_other(tmp_path):
    """`--a 1,2 --b 3,4`, runs 1 and 3 of seed 1, 2 and 4 of seed 2 (each seed's requests the same on both sides):
    the note compared every run with run 1, seed 2's with seed 1's, and said the runs 'replayed different requests',
    where `runs compare 1 3` said nothing. A side's seeds draw their own requests: the intervals over seeds hold
    that; the runs of one seed must be the same requests."""
    import json

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for seed in ("1", "2", "1", "2", "3"):
        done = CliRunner().invoke(app, ["sim", "replay", "--limit", "120", "--rate-scale", "0.8", "--seed", seed,
                                        "--db", url, "--json", "--no-progress"])
        assert done.exit_code == 0, done.output

    def compare(*args: str) -> dict:
        res = CliRunner().invoke(app, ["runs", "compare", *args, "--db", url, "--json", "--no-ci"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    assert compare("--a", "1,2", "--b", "3,4")["workloads_differ"] is False
    assert compare("--a", "1,2", "--b", "4,3")["workloads_differ"] is False
    assert compare("--a", "1,2", "--b", "3,5")["workloads_differ"] is False  # (seed 3 has no run on side A)
    assert compare("1", "4")["workloads_differ"] is True  # (one run a side, two seeds: their requests differ)
