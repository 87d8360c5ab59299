"""`controlplane runs compare` as a CI gate reads it: run A (examples/cluster.yaml, 300 requests, every one
completed) against run B (the same with at most one request queued a replica: half of them rejected). The
intervals' table in a narrow terminal cut its numbers (`-0.021…` at 60 columns), the side-by-side one at 40."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app, common
from controlplane.storage import get_run, make_engine

pytestmark = pytest.mark.usefixtures("no_controlplane_env")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml"


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory) -> str:
    """Run 1: the example's 300 requests all completed; run 2: 150 of them rejected (a queue of one a replica)."""
    d = tmp_path_factory.mktemp("gate")
    (d / "cand.yaml").write_text(EXAMPLE.read_text().replace("max_queued_per_replica: 256", "max_queued_per_replica: 1"))
    db = f"sqlite:///{d / 'runs.db'}"
    for config in (EXAMPLE, d / "cand.yaml"):
        done = CliRunner().invoke(app, ["sim", "replay", "-c", str(config), "--limit", "300", "--db", db, "--json",
                                        "--no-progress"])
        assert done.exit_code == 0, done.output
    return db


def _compare(db: str, *args: str):
    done = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", db, "--resamples", "200", *args])
    assert done.exit_code == 0, done.output
    return done


@pytest.mark.parametrize("width", [40, 60, 80])
def test_the_tables_cut_no_number_in_a_narrow_terminal(rejecting, monkeypatch, width):
    """The intervals' table (and, at 40 columns, the side-by-side one) cut numbers with an ellipsis."""
    monkeypatch.setattr(common.out, "_width", width)
    text = _compare(rejecting).stdout
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
    side, intervals = text.split("runs 1 vs 2: B - A")
    assert {"300", "150", "-150", "+150", "-50.0%"} <= set(side.split()), side
    words = set(intervals.replace("[", " ").replace("]", " ").replace(",", " ").split())
    for number in ("0.1467", "+0.1633", "-0.05622", "-0.001263"):  # (A's attainment, B - A's)
        assert number in words, (number, intervals)


def _json(db: str, *args: str) -> dict:
    return json.loads(_compare(db, "--json", *args).stdout)


def test_json_has_the_side_by_side_rows_and_each_runs_status(rejecting):
    """`--json` had no counts, throughput nor goodput, nor each run's status: run 2, which rejected half the requests,
    read as better on every latency, over the 150 requests both completed (run 1's TTFT mean 6.82 there, 9.16 its
    own), with nothing at the top of the document saying so."""
    done = _compare(rejecting, "--json")
    found = json.loads(done.stdout)
    rows = found["side_by_side"]
    assert (rows["num_completed"]["a"], rows["num_completed"]["b"], rows["num_completed"]["diff"]) == (300, 150, -150)
    assert (rows["num_rejected"]["b"], rows["num_rejected"]["higher_is_better"]) == (150, False)
    assert rows["throughput_rps"]["diff"] < 0 and rows["throughput_rps"]["higher_is_better"] is True
    assert {"num_requests", "num_failed", "goodput_rps", "slo_attainment", "ttft_p99_s", "gpu_hours"} <= set(rows)
    assert found["runs"] == {"1": {"status": "finished", "error": None}, "2": {"status": "finished", "error": None}}
    assert found["metrics_restricted"] is True
    engine = make_engine(rejecting)
    try:
        own = get_run(engine, 1)["summary"]["ttft_mean_s"]
    finally:
        engine.dispose()
    ttft = next(m for m in found["metrics"] if (m["metric"], m["stat"]) == ("ttft", "mean"))
    assert ttft["covers"] == "the 150 requests completed in both runs" and ttft["a"] < own - 1
    assert ttft["a_whole"] == pytest.approx(own, rel=1e-6) and ttft["b_whole"] == pytest.approx(ttft["b"])
    attainment = found["metrics"][0]
    assert attainment["covers"] is None and attainment["a_whole"] is None
    note = next(n for n in found["notes"] if "metrics (those with `covers`" in n)
    assert "14 of the 15 metrics" in note and "run 1: 300, run 2: 150 completed" in note
    assert note in done.stderr.replace("\n", " ")  # (on stderr too, as every note)


def test_the_side_by_side_rows_without_intervals_too(rejecting):
    found = _json(rejecting, "--no-ci")
    assert found["side_by_side"]["num_completed"]["b"] == 150 and found["metrics_restricted"] is False


@pytest.fixture(scope="module")
def failed(tmp_path_factory) -> str:
    """Run 1: 60 requests replayed whole; run 2: the same trace with a bad row at request 40 (the replay fails
    there, its run stored as failed with the 40 requests before it)."""
    d = tmp_path_factory.mktemp("failed")
    rows = [f"r{i:03d},{i * 0.5},500,50" for i in range(60)]
    (d / "good.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    rows[40] = "r040,bad,500,50"
    (d / "bad.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\n" + "\n".join(rows) + "\n")
    db = f"sqlite:///{d / 'runs.db'}"
    for trace, code in (("good.csv", 0), ("bad.csv", 2)):
        done = CliRunner().invoke(app, ["sim", "replay", str(d / trace), "-c", str(EXAMPLE), "--db", db, "--json",
                                        "--no-progress"])
        assert done.exit_code == code, done.output
    return db


@pytest.mark.parametrize("args", [["--json"], ["--json", "--no-ci"], []])
def test_a_failed_run_is_said_to_have_failed(failed, args):
    """A run whose trace failed mid-replay was compared as any other: no status in the JSON, no note."""
    done = _compare(failed, *args)
    note = "note: run 2 failed at "
    assert note in done.stderr and "not finished (TraceFormatError: " in done.stderr
    assert "its figures are those of the 40 requests it replayed before it stopped" in done.stderr.replace("\n", " ")
    if args:
        found = json.loads(done.stdout)
        assert found["runs"]["2"]["status"] == "failed" and found["runs"]["2"]["error"].startswith("TraceFormatError")
        assert found["runs"]["1"] == {"status": "finished", "error": None}
        assert found["notes"][0].startswith(note)


def test_json_metrics_have_the_tables_verdict_and_whether_it_is_better(rejecting, monkeypatch):
    """`--json` had no verdict: a gate had to redo the table's noise test and know each metric's direction."""
    monkeypatch.setattr(common.out, "_width", 400)
    table = _compare(rejecting).stdout.split("runs 1 vs 2: B - A")[1]
    found = _json(rejecting)
    for m in found["metrics"]:
        label = "SLO attainment" if m["metric"] == "slo_attainment" else f"{m['metric']} {m['stat']} (s)"
        row = next(ln for ln in table.splitlines() if ln.startswith(f"│ {label} "))
        word = m["verdict"] or ("- (too few values)" if m["no_verdict"] else "-")
        assert word == row.strip("│ ").split("│")[-1].strip(), (m, row)
        assert m["higher_is_better"] is (m["metric"] == "slo_attainment")
        if m["verdict"] not in ("within noise", None):
            assert m["outcome"] == ("better" if (m["verdict"] == "B higher") == m["higher_is_better"] else "worse")
    by = {(m["metric"], m["stat"]): m for m in found["metrics"]}
    assert (by["slo_attainment", "mean"]["verdict"], by["slo_attainment", "mean"]["outcome"]) == ("B higher", "better")
    # (a p99 of these few requests gets its interval but no verdict: it needs 1,000 values a side)
    p99 = by["ttft", "p99"]
    assert (p99["verdict"], p99["outcome"]) == (None, None) and p99["high"] < 0 and p99["no_verdict"].startswith("p99")
    assert (by["ttft", "p50"]["verdict"], by["ttft", "p50"]["outcome"]) == ("B lower", "better")
    no_ci = _json(rejecting, "--no-ci")["metrics"]
    assert all(m["verdict"] is None and m["outcome"] is None for m in no_ci)
    assert [m["higher_is_better"] for m in no_ci] == [m["higher_is_better"] for m in found["metrics"]]


def _ci_md_gate() -> str:
    """The gate's Python in docs/ci.md (between `python - <<'EOF'` and `EOF`)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "ci.md").read_text()
    return text.split("python - <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]


def test_metrics_names_a_gates_primary_metrics_and_the_ci_md_gate_refuses_one_run_a_side(rejecting, tmp_path):
    """Fifteen verdicts a comparison, and docs/ci.md's gate failed on any: an unchanged candidate failed it 76 times
    in 190, one run a side. `--metrics` names the few a gate judges, and the gate refuses one run a side (its
    intervals hold no seed-to-seed variation)."""
    import subprocess
    import sys

    found = _json(rejecting, "--metrics", "ttft:p50,slo_attainment")
    assert [(m["metric"], m["stat"]) for m in found["metrics"]] == [("slo_attainment", "mean"), ("ttft", "p50")]
    assert found["seed_variation_included"] is False and "of one run a side" in found["interval_over"]
    assert [m["metric"] for m in _json(rejecting, "--no-ci", "--metrics", "e2e:p90")["metrics"]] == ["e2e"]
    bad = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", rejecting, "--metrics", "ttft:p95"])
    assert bad.exit_code == 2 and "--metrics: 'ttft:p95' is not a compared metric" in bad.output
    (tmp_path / "cmp.json").write_text(json.dumps(found))
    gate = subprocess.run([sys.executable, "-c", _ci_md_gate()], cwd=tmp_path, capture_output=True, text=True)
    assert gate.returncode == 1 and "refused: compare several seeds a side" in gate.stderr
    found["seed_variation_included"] = True  # (as several seeds a side give it): B rejected half: a regression
    (tmp_path / "cmp.json").write_text(json.dumps(found))
    gate = subprocess.run([sys.executable, "-c", _ci_md_gate()], cwd=tmp_path, capture_output=True, text=True)
    assert gate.returncode == 1 and "regression: worse" in gate.stderr and "completed fewer: True" in gate.stderr
