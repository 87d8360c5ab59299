"""`controlplane runs export` of runs whose rows were not stored (controlplane/cli/runs.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app


@pytest.fixture(scope="module")
def sweep_db(tmp_path_factory):
    """A sweep of two runs: run 1 recorded with `record: summary`, run 2 (a second sweep) with `record: full`."""
    from sim.sweep import load_spec, run_sweep

    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'runs.db'}"
    for record in ("summary", "full"):
        run_sweep(load_spec(data={"name": record, "trace": {"limit": 40}, "seeds": [0], "record": record,
                                  "space": {"cluster.models.0.replicas": [1]}}), url, backend="serial")
    return url


@pytest.mark.parametrize("what", ["requests", "decisions"])
def test_export_of_a_summary_only_run_says_why_it_has_no_rows(sweep_db, tmp_path, what):
    """It wrote a bare CSV header (`wrote 0 rows`), read as a run of no requests."""
    out = tmp_path / f"{what}.csv"
    res = CliRunner().invoke(app, ["runs", "export", "1", "--what", what, "--db", sweep_db, "-o", str(out)])
    assert res.exit_code != 0 and not out.exists()
    said = " ".join(res.stderr.split())
    assert ("run 1 has no stored rows (its summary counts 40 requests): it was recorded with "
            "`record: summary` (sweep 1)") in said and "set `record: full` in the spec" in said, said


def test_export_of_a_full_run_writes_its_rows(sweep_db):
    res = CliRunner().invoke(app, ["runs", "export", "2", "--what", "requests", "--db", sweep_db])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 41  # header + 40 requests
