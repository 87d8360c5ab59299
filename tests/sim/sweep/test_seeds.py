"""`seeds_change_nothing`: a sweep's points compared over their seeds."""

from __future__ import annotations

from sim.sweep.seeds import same_under_every_seed, seeds_change_nothing


def test_seeds_change_nothing_compares_finished_points_only():
    def run(point, seed, ttft, status="finished"):
        return {"overrides": {"replicas": point}, "seed": seed, "status": status,
                "summary": {"run_id": seed, "wall_s": 0.1 * seed, "ttft_p99_s": ttft}}

    assert seeds_change_nothing([run(1, 0, 1.0), run(2, 0, 2.0)]) is None  # (one seed a point)
    assert seeds_change_nothing([run(1, 0, 1.0), run(1, 1, 1.0), run(2, 0, 2.0), run(2, 1, 2.0)]) is True
    assert seeds_change_nothing([run(1, 0, 1.0), run(1, 1, 1.0), run(2, 0, 2.0), run(2, 1, 2.5)]) is False
    assert seeds_change_nothing([run(1, 0, 1.0), run(1, 1, 9.0, status="failed")]) is None


def test_points_of_one_seed_compare_nothing_and_per_run_fields_are_left_out():
    assert same_under_every_seed([[{"a": 1}], []]) is None
    assert same_under_every_seed([[{"a": 1, "run_id": 1, "wall_s": 2.0}, {"a": 1, "run_id": 2, "wall_s": 3.0}]])
    assert same_under_every_seed([[{"a": 1}, {"a": 1}], [{"a": 2}, {"a": 2}, {"a": 3}]]) is False
