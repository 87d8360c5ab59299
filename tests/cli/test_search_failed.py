"""`controlplane sim search` with a candidate whose runs raise: shown as failed, with its error, exit 1."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles")


@pytest.fixture
def one_failing_candidate(monkeypatch):
    """Every run of the 1-replica candidate raises (as a latency model refusing its settings does at start)."""
    import sim.sweep.search
    from sim.sweep.backends import Backend
    from sim.sweep.worker import RunOutcome

    class FailsOneReplica(Backend):
        def run(self, tasks, traces):
            for t in tasks:
                if t.overrides["cluster.models.0.replicas"] == 1:
                    yield RunOutcome(t, "failed", {"error": "ConfigError: cluster.models[default]: refused"})
                else:
                    yield from super().run([t], traces)

    monkeypatch.setattr(sim.sweep.search, "make_backend", lambda *args, **kwargs: FailsOneReplica())


@pytest.mark.parametrize("json_out", [False, True])
def test_a_search_with_a_failed_candidate_says_so_and_exits_1(tmp_path, one_failing_candidate, json_out):
    """It exited 0, said "1 cheaper candidates rejected" with no word of an error, `runs sweeps` listed the search
    `finished`, and the JSON had the candidate `confirmed` at attainment 0.0 as if measured."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("trace: {limit: 60}\nspace:\n  cluster.models.0.replicas: [1, 2]\n"
                    "search: {confirm_seeds: [0, 1], neighbours: 1}\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "30", "--slo-tpot", "5",
                                      "--slo-attainment", "0.5", "--no-progress", "--db", db]
                                + (["--json"] if json_out else []))
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    if json_out:
        d = json.loads(result.stdout.strip().splitlines()[-1])
        assert d["best"]["overrides"] == {"cluster.models.0.replicas": 2}
        (failed,) = d["failed"]
        assert failed["overrides"] == {"cluster.models.0.replicas": 1} and failed["stage"] == "screen"
        (cheaper,) = d["rejected_cheaper"]
        assert cheaper["stage"] == "failed" and cheaper["attainment"] is None and "refused" in cheaper["error"]
    else:
        assert "1 cheaper candidates rejected (1 of them failed)" in " ".join(result.stdout.split())
        assert ('candidate {"cluster.models.0.replicas": 1} failed (screen, seed 0): ConfigError: '
                "cluster.models[default]: refused") in said
        assert "1 candidate failed (a run raised; not measured, rejected)" in said
    sweeps = CliRunner().invoke(app, ["runs", "sweeps", "--db", db, "--status", "failed"])
    assert sweeps.exit_code == 0 and "search" in sweeps.stdout, sweeps.output
