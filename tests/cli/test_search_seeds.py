"""`controlplane sim search` says which seeds it replays under when the spec sets others (a sweep's `seeds`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_search_notes_the_specs_seeds_it_does_not_use_and_reports_its_own(tmp_path):
    """It ran seeds 7 and 8 and said nothing of the spec's seed 5."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nseeds: [5]\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [7, 8], neighbours: 0}\n")
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5",
                                      "--slo-attainment", "0.5", "--backend", "serial", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert ("note: the spec's seeds [5] are a sweep's: this search replays under seeds [7, 8] "
            "(search.confirm_seeds; the screen and rungs under 7)") in " ".join(result.stderr.split())
    d = json.loads(result.stdout.strip().splitlines()[-1])
    assert d["seeds"] == [7, 8] and set(d["best"]["attainment_by_seed"]) == {"7", "8"}
