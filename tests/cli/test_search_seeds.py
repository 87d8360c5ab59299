"""`controlplane sim search`'s seeds: it chooses under `search.select_seed`, confirms under `search.confirm_seeds`,
says so when the spec sets other seeds (a sweep's `seeds`), and warns when the seed that chose also confirms."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles")

ARGS = ["--slo-ttft", "30", "--slo-tpot", "5", "--slo-attainment", "0.5", "--backend", "serial", "--no-progress"]


def test_a_search_notes_the_specs_seeds_it_does_not_use_and_reports_its_own(tmp_path):
    """It chose under seed 0, confirmed under seeds 7 and 8 and said nothing of the spec's seed 5. (It chose under 7,
    the first confirm seed, which then confirmed the winner it had chosen.)"""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nseeds: [5]\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [7, 8], neighbours: 0}\n")
    result = CliRunner().invoke(app, ["sim", "search", str(spec), *ARGS, "--json"])
    assert result.exit_code == 0, result.output
    assert ("note: the spec's seeds [5] are a sweep's: this search chooses under seed 0 (search.select_seed, by "
            "default) and confirms under seeds [7, 8] (search.confirm_seeds)") in " ".join(result.stderr.split())
    d = json.loads(result.stdout.strip().splitlines()[-1])
    assert d["seeds"] == [0, 7, 8] and set(d["best"]["attainment_by_seed"]) == {"7", "8"}
    assert (d["select_seed"], d["confirm_seeds"], d["selection_seed_confirms"]) == (0, [7, 8], False)
    assert "warning:" not in result.stderr and d["warnings"] == []


def test_a_search_whose_selection_seed_confirms_says_so_and_prints_the_winners_spread_and_margin(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0, 1], neighbours: 0}\n")
    result = CliRunner().invoke(app, ["sim", "search", str(spec), *ARGS])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "(min over confirm seeds [0, 1]; mean 1, SD 0), margin 0.5 over 0.5 (chosen under seed 0 at 1.0)" in out
    assert ("warning: seed 0 both chose the candidates (search.select_seed) and confirms them (search.confirm_seeds): "
            "a winner's attainment under it is the one it was picked for") in " ".join(result.stderr.split())
