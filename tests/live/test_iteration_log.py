"""A recorded run's iterations and the labels of the worker that timed them (controlplane.live.iteration_log),
on a run that served two kinds of worker: what `controlplane calibrate RUN [--worker W]` reads."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import bench
from controlplane.live.iteration_log import read_live_run, worker_meta
from controlplane.storage import make_engine
from tests.live.conftest import record_timed_live_runs

#: Two models on CPU that differ in precision: ``a`` (workers a-0) in fp32, ``b`` (b-0) in bf16.
TWO_KINDS = [
    {"name": "a", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128,
                                            "precision": "fp32"}},
    {"name": "b", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128,
                                            "precision": "bf16"}},
]


@pytest.fixture(scope="module")
def two_kinds_run(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('kinds') / 'live.db'}"
    ((run_id, samples),) = record_timed_live_runs(url, 1, models=TWO_KINDS)
    assert {s.worker_id for s in samples} == {"a-0", "b-0"}
    return url, run_id


def test_a_workers_iterations_carry_that_workers_labels(two_kinds_run):
    url, run_id = two_kinds_run
    engine = make_engine(url)
    try:
        a, b = read_live_run(engine, run_id, "a-0"), read_live_run(engine, run_id, "b-0")
        assert {s.worker_id for s in b.samples} == {"b-0"}
        assert b.meta["precision"] == "bf16" and a.meta["precision"] == "fp32"  # (b's was a-0's: the first ready)
        assert worker_meta(engine, run_id, "b-0")["precision"] == "bf16"
        assert a.meta["compiled"] is False and b.meta["compiled"] is False  # (checked against a grid's: calibrate)
        with pytest.raises(ValueError, match=r"several kinds of worker.*a-0 \(tiny-llama fp32 cpu\); "
                                             r"b-0 \(tiny-llama bf16 cpu\).*--worker"):
            read_live_run(engine, run_id)  # (both fitted into one profile under the first worker's labels)
    finally:
        engine.dispose()


def test_calibrate_labels_the_profile_with_the_chosen_worker_and_refuses_a_mix(two_kinds_run, tmp_path):
    url, run_id = two_kinds_run
    out = tmp_path / "b.json"
    # (backend timings: the labels are the same, and no few-iteration prefill of b's is left out as a stall of
    # the host because a-0 ran beside it)
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--worker", "b-0", "--timing",
                                         "backend", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["precision"] == "bf16" and doc["model"] == "tiny-llama"
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "-o", str(tmp_path / "both.json")])
    assert res.exit_code != 0 and "--worker" in res.output and "b-0" in res.output
    assert not (tmp_path / "both.json").exists()
