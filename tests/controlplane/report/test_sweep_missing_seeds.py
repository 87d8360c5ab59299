"""A sweep report's configuration missing some of the spec's seeds (the sweep interrupted, a run failed) is
flagged and kept off the Pareto front: its minimum over the seeds that finished was on the front as if it were
over all of them, so one lucky seed put it there."""

from __future__ import annotations

import html
import re

from controlplane.report.html import sweep_report
from controlplane.storage import ensure_schema, make_engine
from sim.sweep.store import create_or_resume, finish_sweep, store_outcome
from sim.sweep.worker import RunOutcome, RunTask


def _rows(page: str, start: str, end: str = "</table>") -> list[list[str]]:
    """The rows of the first table after ``start``, up to ``end``."""
    part = page[page.index(start):]
    part = part[:part.index(end)]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", part) if "<td" in row]


def test_a_point_missing_seeds_is_flagged_and_kept_off_the_front(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    ensure_schema(engine)
    sweep_id, _ = create_or_resume(engine, name="cut", kind="grid", spec={"seeds": [0, 1, 2]}, spec_hash="h",
                                   trace=None, num_runs=6)
    runs = [(1, 0, 0.80), (1, 1, 0.82), (1, 2, 0.81),  # every seed
            (2, 0, 0.99), (2, 1, 0.995)]  # seed 2 never ran (Ctrl-C): on the front by its two seeds
    for i, (replicas, seed, attainment) in enumerate(runs):
        config = {"cluster": {"models": [{"name": "default", "replicas": replicas, "gpu": "h100-80gb"}]}}
        summary = {"slo_attainment": attainment, "gpu_seconds": 3600.0 * replicas,
                   "gpu_seconds_by_gpu": {"h100-80gb": 3600.0 * replicas}}
        task = RunTask(key=f"k{i}", index=replicas, seed=seed, overrides={"cluster.models.0.replicas": replicas},
                       config=config, trace_id=f"seed={seed}")
        store_outcome(engine, sweep_id, RunOutcome(task, "finished", summary))
    finish_sweep(engine, sweep_id, "interrupted")
    try:
        page = sweep_report(engine, sweep_id)
    finally:
        engine.dispose()
    front = _rows(page, "<h2>Pareto front</h2>")
    assert [row[0] for row in front] == ['{"cluster.models.0.replicas": 1}']  # 2 replicas was on it, at 0.99
    assert "configurations missing seeds (1), kept off the front" in page
    (partial,) = _rows(page, "<h3>")
    assert partial[0] == '{"cluster.models.0.replicas": 2}' and partial[2] == "2 of 3 seeds (0, 1; missing 2)"
