"""`controlplane sim sweep` aggregates each point over its seeds: a second table, and `points` in `--json`.
Before, a point's mean and minimum over its seeds were only in the HTML report (`runs report --sweep`)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_sweep_over_seeds_prints_and_lists_each_point_over_its_seeds(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 40, rate_scale: 0.5}\nseeds: [0, 1, 2]\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--no-progress",
                                      "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout.strip().splitlines()[-1])
    points = d["points"]
    assert [p["overrides"] for p in points] == [{"cluster.models.0.replicas": 1}, {"cluster.models.0.replicas": 2}]
    for p in points:
        runs = [r for r in d["runs"] if r["overrides"] == p["overrides"]]
        attainment = [r["summary"]["slo_attainment"] for r in runs]
        assert p["n"] == 3 and sorted(p["seeds"]) == [0, 1, 2] and p["runs"] == [r["run_id"] for r in runs]
        assert p["attainment_mean"] == pytest.approx(sum(attainment) / 3, rel=1e-5)
        assert p["attainment_min"] == pytest.approx(min(attainment)) and p["attainment_sd"] is not None
        assert p["gpu_hours_mean"] == pytest.approx(sum(r["summary"]["gpu_seconds"] for r in runs) / 3 / 3600,
                                                    rel=1e-5)
    assert len({r["summary"]["slo_attainment"] for r in d["runs"] if r["overrides"]["cluster.models.0.replicas"]
                == 1}) > 1  # (thinned by seeded draws: the seeds differ, so the SD means something)

    table = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--no-progress"])
    assert table.exit_code == 0, table.output
    assert "each point over its seeds" in table.stdout
    rows = [line.split() for line in table.stdout.split("each point over its seeds")[1].splitlines()
            if re.match(r" 3 +[12] ", line)]
    assert [row[:2] for row in rows] == [["3", "1"], ["3", "2"]]
    assert rows[0][2:5] == [f"{points[0][k]:.4g}" for k in ("attainment_mean", "attainment_min", "attainment_sd")]


def test_a_sweep_of_one_seed_prints_no_table_of_points(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 20}\nspace:\n  cluster.models.0.replicas: [1, 2]\n")
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
                                      "--backend", "serial", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "each point over its seeds" not in result.stdout  # (the runs' table is the points' already)


def test_at_80_columns_the_table_of_points_cuts_no_figure():
    from rich.console import Console

    from controlplane.cli.sweep import points_table
    from sim.sweep.points import point_aggregates

    runs = [{"id": 3 * i + s + 1, "seed": s, "status": "finished",
             "overrides": {"cluster.models.0.gpu": gpu, "cluster.models.0.latency.gpu": gpu,
                           "plugins.settings.continuous-batching.policy": "sarathi"},
             "summary": {"slo_attainment": 0.9 + 0.01 * s, "gpu_seconds": 756.0, "cost_usd": 0.1644}}
            for i, gpu in enumerate(["a100-80gb", "h100-80gb"]) for s in range(3)]
    console = Console(width=80, record=True)
    console.print(points_table(point_aggregates(runs), "sweep 1: each point over its seeds", width=80))
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    rows = [line.split() for line in text.splitlines() if re.match(r" 3 ", line)]
    assert len(rows) == 2 and all(row[-5:] == ["0.91", "0.9", "0.01", "0.21", "0.1644"] for row in rows)
    assert "in every run: plugins.settings.continuous-batching.policy = sarathi" in " ".join(text.split())
