"""`controlplane runs compare` of several runs a side (`--a 1,2 --b 3,4`, `--a-sweep`/`--b-sweep`): the same
restrictions, counts and notes as one run a side, and a note on a side that is not one configuration over seeds."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")

#: One replica behind a queue of 4: a third of the first 150 requests are rejected (queue_full).
TIGHT = {
    "name": "tight",
    "plugins": {"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
                            "builtin-latency-models"],
                "settings": {"queue-limit": {"max_queued": 4}}},
    "cluster": {"models": [{"name": "default", "replicas": 1, "latency_model": "vidur",
                            "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100", "tensor_parallel": 1,
                                        "attention": "scaled"},
                            "gpu": "a100-80gb", "gpus_per_replica": 1}]},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> str:
    """Runs 1, 2: the bundled config, seeds 0 and 1; runs 3, 4: `TIGHT`, seeds 0 and 1; run 5: `TIGHT` routed
    round-robin, seed 0; each of the bundled trace's first 150 requests; run 6: the bundled config, seed 2, of the
    first 100; run 7: `TIGHT`, seed 0 again, of the first 150."""
    folder = tmp_path_factory.mktemp("several")
    db = f"sqlite:///{folder / 'runs.db'}"
    (folder / "tight.yaml").write_text(yaml.safe_dump(TIGHT))
    rr = {**TIGHT, "plugins": {**TIGHT["plugins"], "enabled": [p.replace("least-loaded", "round-robin")
                                                               for p in TIGHT["plugins"]["enabled"]]}}
    (folder / "rr.yaml").write_text(yaml.safe_dump(rr))
    for config, seed, limit in ((None, 0, 150), (None, 1, 150), ("tight.yaml", 0, 150), ("tight.yaml", 1, 150),
                                ("rr.yaml", 0, 150), (None, 2, 100), ("tight.yaml", 0, 150)):
        args = ["-c", str(folder / config)] if config else []
        done = CliRunner().invoke(app, ["sim", "replay", *args, "--limit", str(limit), "--seed", str(seed), "--db", db,
                                        "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    return db


def _compare(db: str, *args: str):
    done = CliRunner().invoke(app, ["runs", "compare", "--db", db, "--resamples", "200", *args])
    assert done.exit_code == 0, done.output
    return done


def test_several_runs_a_side_are_compared_over_the_requests_every_run_completed(runs):
    """Runs 3, 4 rejected a third of the requests: with one run a side the latencies were over the requests completed
    in both (`*`, covers, a note), with several over every request each run completed, unmarked, B 'better'."""
    found = json.loads(_compare(runs, "--a", "1,2", "--b", "3,4", "--json").stdout)
    assert found["metrics_restricted"] is True
    rows = found["side_by_side"]
    assert rows["num_completed"]["b"] < rows["num_completed"]["a"] == 150 and rows["num_rejected"]["b"] > 0
    ttft = next(m for m in found["metrics"] if (m["metric"], m["stat"]) == ("ttft", "p50"))
    assert ttft["method"] == "hierarchical"
    assert ttft["covers"] == f"the {rows['num_completed']['b']:g} requests completed in every run"
    assert ttft["a_whole"] is not None and ttft["a"] != ttft["a_whole"]
    assert any(n.startswith("note: 14 of the 15 metrics (those with `covers`, which says which requests) are over "
                            "the requests every run completed (or replayed)") and "run 3: 97" in n
               for n in found["notes"])
    assert not any("not one configuration" in n or "more than once" in n for n in found["notes"])
    table = _compare(runs, "--a", "1,2", "--b", "3,4")
    for row in ("│ requests ", "│ completed ", "│ rejected ", "│ GPU-seconds "):  # (only the GPU rows were shown)
        assert row in table.stdout, row
    assert "ttft p50 (s) *" in table.stdout
    assert "* A, B and the interval over the 97 requests completed in every run " in table.stdout
    assert "(paired)" not in table.stdout  # (the requests are drawn in each run apart)


def test_several_runs_a_side_of_nested_requests_are_compared_over_those_every_run_replayed(runs):
    """Run 6 replayed the first 100 of the others' 150 requests: with several runs a side the others' 50 more were
    pooled into their side's values, unsaid."""
    done = _compare(runs, "--a", "1,2", "--b", "6,3", "--json")
    found = json.loads(done.stdout)
    ttft = next(m for m in found["metrics"] if (m["metric"], m["stat"]) == ("ttft", "mean"))
    assert ttft["covers"].startswith("the ") and ttft["covers"].endswith(
        " requests completed in every run, of the 100 requests every run replayed (run 1's 50, run 2's 50, run 3's 50 "
        "others left out: 100, 101, 102, ...)")
    assert found["workloads_note"].startswith("note: the intervals compare the 100 requests every run replayed (")
    assert found["workloads_note"].endswith(", each run over them; the side-by-side table is each side's runs whole "
                                            "(their mean)")


def test_one_run_a_side_keeps_its_paired_restriction(runs):
    found = json.loads(_compare(runs, "--a", "1", "--b", "3", "--json").stdout)
    ttft = next(m for m in found["metrics"] if (m["metric"], m["stat"]) == ("ttft", "p50"))
    assert (ttft["method"], ttft["covers"]) == ("paired", "the 97 requests completed in both runs")
    assert any("are over the requests both runs completed (or replayed), not every request each run completed "
               "(run 1: 150, run 3: 97 completed), paired: their a, b and intervals are not the runs' own values" in n
               for n in found["notes"])
    assert "(paired)" in _compare(runs, "--a", "1", "--b", "3").stdout


def test_a_side_that_mixes_configurations_or_repeats_a_seed_is_noted(runs):
    """`--a 1,2,3`: runs of another routing policy, and two of seed 0, were taken for seeds of one configuration.
    Runs of two configurations that share a seed are no repeat (`--a 1,2,11` of two chunk sizes read "side A runs
    seed 1 more than once (runs 1, 11)"): the seed note counts the runs of one configuration."""
    done = _compare(runs, "--a", "3,4,5", "--b", "1,2", "--json")
    notes = json.loads(done.stdout)["notes"]
    assert ("note: side A's runs are not one configuration over seeds: run 5's config differs from run 3's "
            "(plugins.enabled); the intervals over seeds take them for seeds of one configuration") in "\n".join(notes)
    assert not any("more than once" in n for n in notes)  # (runs 3 and 5: seed 0 of two configurations)
    assert not any("side B" in n for n in notes)
    assert done.stderr.splitlines() == notes
    repeated = json.loads(_compare(runs, "--a", "3,4,5,7", "--b", "1,2", "--json").stdout)["notes"]
    assert any(n.startswith("note: side A runs seed 0 more than once (runs 3, 7): ") for n in repeated)
    table = _compare(runs, "--a", "3,4,5", "--b", "1,2", "--no-ci")
    assert "note: side A's runs are not one configuration over seeds" in table.stderr


def test_sweeps_a_side_are_compared_over_the_requests_every_run_completed(tmp_path):
    """`--a-sweep`/`--b-sweep` take the same path as `--a`/`--b`: restricted as several runs a side are."""
    from sim.sweep import load_spec, run_sweep

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(TIGHT))
    for config in ({}, {"config": str(tmp_path / "tight.yaml")}):
        run_sweep(load_spec(data={**config, "trace": {"limit": 150}, "seeds": [0, 1]}), db, backend="serial")
    found = json.loads(_compare(db, "--a-sweep", "1", "--b-sweep", "2", "--json").stdout)
    assert (found["a"], found["b"], found["metrics_restricted"]) == ([1, 2], [3, 4], True)
    ttft = next(m for m in found["metrics"] if (m["metric"], m["stat"]) == ("ttft", "p50"))
    assert ttft["covers"] == "the 97 requests completed in every run" and ttft["method"] == "hierarchical"
