"""`point_aggregates`: a sweep's runs by point over their seeds (n, mean, minimum, SD)."""

from __future__ import annotations

import pytest

from sim.sweep.points import point_aggregates


def _run(i, seed, replicas, attainment, gpu_s=3600.0, cost=1.0, status="finished"):
    summary = {"slo_attainment": attainment, "gpu_seconds": gpu_s, "cost_usd": cost} if status == "finished" else \
        {"error": "boom"}
    return {"id": i, "seed": seed, "status": status, "summary": summary,
            "overrides": {"cluster.models.0.replicas": replicas}}


def test_each_point_is_its_finished_runs_mean_min_and_sd_over_its_seeds():
    runs = [_run(1, 0, 3, 0.938, 1569.0, 1.0896), _run(2, 1, 3, 0.925, 1569.0, 1.0896), _run(3, 2, 3, 0.930),
            _run(4, 0, 4, 0.995, 7200.0, 2.0), _run(5, 1, 4, None, status="failed")]
    three, four = point_aggregates(runs)
    assert three["overrides"] == {"cluster.models.0.replicas": 3} and three["runs"] == [1, 2, 3]
    assert (three["n"], three["seeds"], three["not_finished"]) == (3, [0, 1, 2], 0)
    assert three["attainment_mean"] == pytest.approx(0.931) and three["attainment_min"] == 0.925
    assert three["attainment_sd"] == pytest.approx(0.0065574, abs=1e-6)
    assert three["gpu_hours_mean"] == pytest.approx((1569 * 2 + 3600) / 3 / 3600, rel=1e-5)
    assert three["cost_usd_mean"] == pytest.approx((1.0896 * 2 + 1) / 3, rel=1e-5) and three["cost_usd_sd"] > 0
    # one seed finished (the other failed): its figures, and no SD
    assert (four["n"], four["seeds"], four["not_finished"]) == (1, [0], 1)
    assert (four["attainment_mean"], four["attainment_min"], four["attainment_sd"]) == (0.995, 0.995, None)
    assert (four["gpu_hours_mean"], four["gpu_hours_sd"], four["cost_usd_mean"]) == (2.0, None, 2.0)


def test_a_point_with_guardians_is_costed_with_them_and_one_without_a_figure_has_none():
    guarded = {"id": 1, "seed": 0, "status": "finished", "overrides": {},
               "summary": {"slo_attainment": 1.0, "gpu_seconds": 7200.0, "cost_usd": 5.0, "guardian_gpu_hours": 1.5,
                           "total_cost_usd": 8.75}}
    (point,) = point_aggregates([guarded])
    assert point["cost_usd_mean"] == 8.75 and point["gpu_hours_mean"] == 2.0
    (bare,) = point_aggregates([{**guarded, "summary": {"slo_attainment": 0.5}}])
    assert (bare["cost_usd_mean"], bare["gpu_hours_mean"], bare["attainment_mean"]) == (None, None, 0.5)
