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
