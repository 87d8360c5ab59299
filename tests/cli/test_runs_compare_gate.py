"""`controlplane runs compare` as a CI gate reads it: run A (examples/cluster.yaml, 300 requests, every one
completed) against run B (the same with at most one request queued a replica: half of them rejected). The
intervals' table in a narrow terminal cut its numbers (`-0.021…` at 60 columns), the side-by-side one at 40."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app, common

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
