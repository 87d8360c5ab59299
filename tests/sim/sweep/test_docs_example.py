"""docs/sweeps.md shows examples/sweep.yaml verbatim, and that spec runs."""

from __future__ import annotations

import re
from pathlib import Path

from controlplane.storage import make_engine
from sim.sweep import load_spec, run_sweep
from sim.sweep.store import sweep_runs

ROOT = Path(__file__).resolve().parents[3]


def test_the_doc_shows_the_example_verbatim():
    doc = (ROOT / "docs" / "sweeps.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert blocks, "docs/sweeps.md has no yaml block"
    assert blocks[0] == (ROOT / "examples" / "sweep.yaml").read_text()


def test_the_example_spec_runs(tmp_path):
    loaded = load_spec(ROOT / "examples" / "sweep.yaml")
    assert len(loaded.points()) == 24
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = run_sweep(loaded, db, backend="pool", workers=2)
    assert (result.total, result.ran) == (24, 24)
    engine = make_engine(db)
    runs = sweep_runs(engine, result.sweep_id)
    engine.dispose()
    assert len(runs) == 24 and all(r["summary"]["num_requests"] == 1500 for r in runs)
    by = {}
    for r in runs:
        by.setdefault(r["overrides"]["cluster.models.0.replicas"], []).append(r["summary"]["slo_attainment"])
    assert min(by[6]) > max(by[2])  # more replicas, better attainment on this bursty trace
