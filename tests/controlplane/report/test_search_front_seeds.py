"""A search's report put a candidate on its Pareto front over its selection seed's run and its confirmation seeds'
(the winner over seeds 0, 1, 2 where the search confirms on 1, 2): its attainment and cost were not the ones its
`best` says. A confirmed candidate's point is over its confirmation seeds, as `best` is."""

from __future__ import annotations

import pytest

from controlplane.report.configs import search_aggregated_runs
from controlplane.report.html import sweep_report
from controlplane.storage import make_engine
from sim.sweep import load_spec
from sim.sweep.search import search
from tests.controlplane.report.test_sweep_front import _front_rows

SPEC = {"name": "front", "trace": {"format": "azure", "limit": 150, "rate_scale": 0.8}, "record": "summary",
        "base": {"cluster.models.0.latency_model": "roofline",
                 "cluster.models.0.latency.model": "meta-llama/Llama-2-7b-hf", "slo": {"ttft_s": 2.0, "tpot_s": 0.2}},
        "space": {"cluster.models.0.replicas": [1, 2, 3]},
        "search": {"screen_fraction": 0.5, "confirm_seeds": [1, 2], "neighbours": 1}}


def test_a_searchs_front_is_over_the_seeds_its_best_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = search(load_spec(data=SPEC), target=0.5, backend="serial", db_url=url).as_dict()
    best = result["best"]
    assert best is not None and sorted(best["attainment_by_seed"]) == ["1", "2"]
    engine = make_engine(url)
    try:
        page = sweep_report(engine, result["sweep_id"])
    finally:
        engine.dispose()
    rows = {row[0]: row for row in _front_rows(page)}
    import json

    winner = rows[json.dumps(best["overrides"], sort_keys=True)]
    assert winner[2] == "1, 2"  # (not "0, 1, 2": its selection run at seed 0 is not part of its confirmation)
    assert float(winner[5]) == pytest.approx(best["attainment"], rel=1e-3)
    assert float(winner[3]) == pytest.approx(best["cost"], rel=1e-3)
    assert "a search's confirmed candidate over its confirmation seeds" in page


def test_a_selection_seed_that_confirms_and_a_search_stored_before_confirm_seeds_keep_it():
    runs = [{"id": 1, "seed": 0, "stage": "full", "overrides": {"r": 2}},
            {"id": 2, "seed": 1, "stage": "confirm", "overrides": {"r": 2}},
            {"id": 3, "seed": 0, "stage": "full", "overrides": {"r": 1}}]  # (not confirmed: its selection run)
    assert [r["id"] for r in search_aggregated_runs(runs, {"confirm_seeds": [1, 2]})] == [2, 3]
    assert [r["id"] for r in search_aggregated_runs(runs, {"confirm_seeds": [0, 1]})] == [1, 2, 3]
    assert [r["id"] for r in search_aggregated_runs(runs, {})] == [1, 2, 3]
