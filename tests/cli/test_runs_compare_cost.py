"""`runs compare`'s money with a run whose cost is not known (a GPU without a price): a side's cost is `-`,
not the mean of its priced runs alone; and `--json` has the cost rows the table shows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.compare_ci import summary_means

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


@pytest.fixture(scope="module")
def priced_unpriced(tmp_path_factory) -> str:
    """Runs 1 and 3: one L4 replica (priced); run 2: two MI300X replicas (no price): 20 requests each."""
    d = tmp_path_factory.mktemp("cost")
    (d / "t.csv").write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                             + "".join(f"q{i},{i},500,50\n" for i in range(20)))
    for name, replicas, gpu in (("priced", 1, "l4"), ("unpriced", 2, "mi300x")):
        (d / f"{name}.yaml").write_text("cluster:\n  models:\n    - {name: default, replicas: %d, gpu: %s, "
                                        "num_kv_blocks: 1000}\n" % (replicas, gpu))
    db = f"sqlite:///{d / 'r.db'}"
    for name in ("priced", "unpriced", "priced"):
        done = CliRunner().invoke(app, ["sim", "replay", str(d / "t.csv"), "-c", str(d / f"{name}.yaml"), "--db", db,
                                        "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    return db


def _row(text: str, label: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.strip("│ ").startswith(label + " "))
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_a_side_with_an_unpriced_run_has_no_cost(priced_unpriced):
    """Runs 1,2 against 3: GPU-hours are both runs' mean, and the cost was run 1's alone (A and B alike)."""
    done = CliRunner().invoke(app, ["runs", "compare", "--a", "1,2", "--b", "3", "--db", priced_unpriced, "--no-ci"])
    assert done.exit_code == 0, done.output
    assert _row(done.stdout, "cost (USD)")[1:] == ["-", "0.004444", "-", "-"]
    assert _row(done.stdout, "cost per 1,000")[1] == "-"
    assert _row(done.stdout, "GPU-hours")[1:3] == ["0.008333", "0.005556"]
    priced = CliRunner().invoke(app, ["runs", "compare", "--a", "1,3", "--b", "3", "--db", priced_unpriced,
                                      "--no-ci"])
    assert _row(priced.stdout, "cost (USD)")[1:3] == ["0.004444", "0.004444"]


def test_two_unpriced_sides_show_the_cost_row():
    """A cost both sides lack is a row of `-`, not left out."""
    from controlplane.cli.summary_table import compare_table
    from rich.console import Console

    s = {"num_requests": 1, "gpu_hours": 0.5, "cost_usd": None}
    console = Console(width=200, record=True)
    console.print(compare_table(s, s, "a", "b"))
    assert _row(console.export_text(), "cost (USD)")[1:] == ["-", "-", "-", "-"]


def test_guardian_and_total_cost_means_need_every_run():
    runs = [{"summary": {"cost_usd": 1.0, "guardian_cost_usd": 2.0, "total_cost_usd": 3.0, "gpu_hours": 1.0}},
            {"summary": {"cost_usd": 3.0, "guardian_cost_usd": None, "total_cost_usd": None, "gpu_hours": 3.0}}]
    means = summary_means(runs)
    assert means["cost_usd"] == 2.0 and means["gpu_hours"] == 2.0
    assert means["guardian_cost_usd"] is None and means["total_cost_usd"] is None
    assert summary_means(runs[:1])["guardian_cost_usd"] == 2.0


@pytest.mark.parametrize("ci", [["--no-ci"], ["--resamples", "100"]])
def test_json_has_the_cost_rows_of_the_table(priced_unpriced, ci):
    """`--json` had the latency metrics alone: no cost, GPU-hours, GPU-seconds or peak replicas."""
    done = CliRunner().invoke(app, ["runs", "compare", "--a", "1,2", "--b", "3", "--db", priced_unpriced, "--json", *ci])
    assert done.exit_code == 0, done.output
    cost = json.loads(done.stdout)["cost"]
    assert cost["cost_usd"] == {"a": None, "b": pytest.approx(0.00444444444), "diff": None, "diff_pct": None}
    assert cost["cost_per_1k_requests_usd"]["a"] is None
    assert cost["gpu_seconds"] == {"a": 30.0, "b": 20.0, "diff": -10.0, "diff_pct": pytest.approx(-100 / 3)}
    assert cost["gpu_hours"]["a"] == pytest.approx(30 / 3600) and cost["peak_replicas"]["a"] == 1.5
    assert "guardian_cost_usd" not in cost  # (no run has guardians)
    priced = json.loads(CliRunner().invoke(app, ["runs", "compare", "1", "3", "--db", priced_unpriced, "--json",
                                                 *ci]).stdout)["cost"]
    assert priced["cost_usd"]["a"] == priced["cost_usd"]["b"] and priced["cost_usd"]["diff"] == 0


def test_json_cost_has_the_guardians_and_total():
    from controlplane.cli.compare_ci import cost_diffs

    a = [{"summary": {"cost_usd": 1.0, "guardian_cost_usd": 2.0, "total_cost_usd": 3.0, "guardian_gpu_hours": 1.0}}]
    b = [{"summary": {"cost_usd": 1.0, "guardian_cost_usd": 4.0, "total_cost_usd": 5.0, "guardian_gpu_hours": 2.0}}]
    found = cost_diffs(a, b)
    assert found["total_cost_usd"] == {"a": 3.0, "b": 5.0, "diff": 2.0, "diff_pct": pytest.approx(200 / 3)}
    assert found["guardian_cost_usd"]["diff"] == 2.0 and found["guardian_gpu_hours"]["b"] == 2.0


def test_with_intervals_several_runs_a_side_still_show_their_gpu_time_and_money(priced_unpriced):
    """With intervals (the default) and several runs a side, only the intervals' table was printed: no GPU-hours,
    no cost (money is per run, not per request: no interval). Their means are a table of their own now."""
    done = CliRunner().invoke(app, ["runs", "compare", "--a", "1,3", "--b", "2", "--db", priced_unpriced,
                                    "--resamples", "200"])
    assert done.exit_code == 0, done.output
    assert _row(done.stdout, "GPU-hours")[1:3] == ["0.005556", "0.01111"]
    assert _row(done.stdout, "cost (USD)")[1:3] == ["0.004444", "-"]
    assert "B - A with confidence intervals" in done.stdout
    assert not any(ln.strip("│ ").startswith("TTFT p50") for ln in done.stdout.splitlines())  # (in the intervals')
