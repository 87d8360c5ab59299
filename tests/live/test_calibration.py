"""Calibration: live iterations (controlplane.live.iteration_samples, .calibration, .iteration_log)
folded into a profile by the workflow (sim.calibration)."""

from __future__ import annotations

import pytest

from controlplane.events import IterationTimed, Tick
from controlplane.hardware.profile_format import read_profile, write_profile
from controlplane.live.calibration import Overhead, add_overhead, aggregate_rows, fit_overhead, live_rows
from controlplane.live.calibration_table import samples_table
from controlplane.live.iteration_log import IterationLog, read_live_run, run_iterations
from controlplane.live.iteration_samples import (
    HANDOFF_MAX_S,
    STALL_MIN_PEERS,
    WINDOW_S,
    IterationSample,
    at_pace,
    join_runs,
    split_stalls,
    with_handoffs,
)
from sim.calibration import (
    calibrate,
    calibrate_repeats,
    calibrate_rows,
    live_slowdowns,
    profile_price_s,
    repeat_spread,
)
from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel


def row(p_tok=0, p_seqs=0, d_seqs=0, d_ctx=0, t=0.01, **extra):
    return {"num_prefill_tokens": p_tok, "num_prefill_seqs": p_seqs, "num_decode_seqs": d_seqs,
            "sum_decode_context": d_ctx, "sum_prefill_context": 0, "iteration_s": t, **extra}


def sample(start, wall, backend, worker="w-0", handoff=0.0, **shape):
    return IterationSample(worker, 0, start, start + wall, row(t=backend, **shape), handoff)


# --- hand-offs and overhead -------------------------------------------------------------------------


def test_handoffs_tile_a_busy_worker_and_idle_iterations_get_the_typical_one():
    a = IterationSample("w-0", 1, 0.000, 0.010, row(d_seqs=1, d_ctx=5))
    b = IterationSample("w-0", 2, 0.0103, 0.020, row(d_seqs=1, d_ctx=6))  # 0.3 ms after a's reply
    c = IterationSample("w-0", 3, 0.0205, 0.030, row(d_seqs=1, d_ctx=7))  # 0.5 ms after b's
    d = IterationSample("w-0", 4, 0.500, 0.510, row(p_tok=8, p_seqs=1))  # the worker was idle before it
    e = IterationSample("w-1", 1, 0.0101, 0.020, row(d_seqs=1, d_ctx=5))  # another worker: not a's successor
    out = with_handoffs([d, a, e, c, b])  # any order; the result keeps it
    assert [s.batch_id for s in out] == [4, 1, 1, 3, 2]
    got = {(s.worker_id, s.batch_id): s.handoff_s for s in out}
    assert got[("w-0", 1)] == pytest.approx(0.0003) and got[("w-0", 2)] == pytest.approx(0.0005)
    typical = 0.0004  # the median of the measured ones stands in where no batch followed at once
    assert got[("w-0", 3)] == pytest.approx(typical) and got[("w-0", 4)] == pytest.approx(typical)
    assert got[("w-1", 1)] == pytest.approx(typical)
    assert out[1].effective_s == pytest.approx(0.0103)  # a's start to b's start
    assert 0.5 - 0.030 > HANDOFF_MAX_S
    assert with_handoffs([a])[0].handoff_s == 0.0  # nothing to measure from


def test_overhead_is_the_mean_extra_time_per_iteration_sequence_and_prompt():
    samples = [sample(0, 0.010 + 0.001 + 0.0002 * n, 0.010, d_seqs=n, d_ctx=10 * n) for n in (1, 2, 4, 8) * 5]
    samples += [sample(0, 0.020 + 0.001 + 0.0002 * n + 0.0015 * n, 0.020, p_tok=16 * n, p_seqs=n) for n in (1, 1, 2, 3)]
    oh = fit_overhead(samples)
    assert oh.base_s == pytest.approx(0.001, rel=1e-3) and oh.per_seq_s == pytest.approx(0.0002, rel=1e-3)
    assert oh.per_prompt_s == pytest.approx(0.0015, rel=1e-3)
    assert oh.at(10) == pytest.approx(0.003) and oh.at(2, 2) == pytest.approx(0.0044) and oh.samples == 24
    rows = add_overhead([row(d_seqs=2, d_ctx=20, t=0.01), row(p_tok=32, p_seqs=1, t=0.02)], oh)
    assert rows[0]["iteration_s"] == pytest.approx(0.0114) and rows[1]["iteration_s"] == pytest.approx(0.0227)
    # The hand-off counts as overhead: it is live time the backend's own timer does not see.
    handed = fit_overhead([sample(0, 0.011, 0.010, handoff=0.0005, d_seqs=1, d_ctx=1)] * 3)
    assert handed.base_s == pytest.approx(0.0015) and handed.per_seq_s == 0 and handed.per_prompt_s == 0
    with pytest.raises(ValueError):
        fit_overhead([])


def test_overhead_dataclass_round_trip():
    oh = Overhead(0.001, 0.0001, 10, 0.0011, 0.002)
    assert oh.as_dict()["overhead_base_s"] == 0.001 and oh.as_dict()["overhead_per_prompt_s"] == 0.002
    assert oh.at(0) == 0.001 and oh.at(1, 1) == pytest.approx(0.0031)


# --- profile rows -----------------------------------------------------------------------------------


def test_aggregate_rows_averages_each_shape_and_counts_its_iterations():
    rows = [row(d_seqs=4, d_ctx=400, t=0.010), row(d_seqs=4, d_ctx=404, t=0.014), row(p_tok=64, p_seqs=1, t=0.03),
            row(d_seqs=4, d_ctx=4000, t=0.02, padded_decode_context=4000)]
    out = sorted(aggregate_rows(rows), key=lambda r: (r["num_prefill_seqs"], r["sum_decode_context"]))
    assert len(out) == 3
    assert out[0]["iteration_s"] == pytest.approx(0.012) and out[0]["sum_decode_context"] == pytest.approx(402)
    assert [r["samples"] for r in out] == [2, 1, 1]
    assert "padded_decode_context" in out[1] and "padded_decode_context" not in out[0]
    # Means of means stay means of the iterations.
    again = aggregate_rows([{**out[0], "samples": 2}, row(d_seqs=4, d_ctx=402, t=0.018)])
    assert len(again) == 1 and again[0]["samples"] == 3 and again[0]["iteration_s"] == pytest.approx(0.014)


def test_live_rows_weigh_a_shape_by_the_time_windows_it_was_timed_in():
    spread = [sample(2.0 * i, 0.009, 0.008, d_seqs=1, d_ctx=50) for i in range(10)]  # all through the run
    burst = [sample(30 + 0.012 * i, 0.012, 0.011, d_seqs=3, d_ctx=150) for i in range(20)]  # 20 in 0.24 s
    rows = {r["num_decode_seqs"]: r for r in live_rows(spread + burst)}
    assert rows[1]["samples"] == 10 and rows[3]["samples"] == 1
    assert rows[1]["iteration_s"] == pytest.approx(0.009) and rows[3]["iteration_s"] == pytest.approx(0.012)
    assert live_rows(burst, window_s=0.1)[0]["samples"] == 3
    assert WINDOW_S == 1.0


def test_join_runs_keeps_runs_apart():
    one = [IterationSample("w-0", b, 0.01 * b, 0.01 * b + 0.0098, row(d_seqs=1, d_ctx=b)) for b in range(5)]
    two = [IterationSample("w-0", b, 0.5 + 0.01 * b, 0.5 + 0.01 * b + 0.0097, row(d_seqs=1, d_ctx=b))
           for b in range(5)]  # the same worker id and overlapping clocks: another run
    joined = join_runs(one, two, [])
    assert len(joined) == 10
    assert [s.handoff_s for s in joined[:4]] == pytest.approx([0.0002] * 4)
    assert [s.handoff_s for s in joined[5:9]] == pytest.approx([0.0003] * 4)
    assert min(s.start_s for s in joined[5:]) > max(s.end_s for s in joined[:5]) + 5 * WINDOW_S
    assert [s.wall_s for s in joined] == pytest.approx([s.wall_s for s in one + two])


def test_at_pace_scales_the_backend_and_keeps_the_live_paths_own_time():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4)]
    run = with_handoffs([sample(0.01 * i, 0.004 + 0.001 * (i % 2), 0.003 + 0.001 * (i % 2), d_seqs=1 + i % 2,
                                d_ctx=32 * (1 + i % 2)) for i in range(8)])
    slow = at_pace(run, 1.25)
    assert [s.backend_s for s in slow] == pytest.approx([1.25 * s.backend_s for s in run])
    assert [s.effective_s - s.backend_s for s in slow] == pytest.approx([s.effective_s - s.backend_s for s in run])
    assert [s.start_s for s in slow] == [s.start_s for s in run]
    assert live_slowdowns(grid, {}, slow)["all"] == pytest.approx(1.25 * live_slowdowns(grid, {}, run)["all"])
    fitted = [calibrate_rows(x, grid, {}).overhead for x in (run, slow)]
    assert fitted[0].base_s == pytest.approx(fitted[1].base_s)
    with pytest.raises(ValueError, match="hand-offs"):
        at_pace([sample(0, 0.01, 0.008, handoff=None, d_seqs=1, d_ctx=8)], 1.1)
    with pytest.raises(ValueError, match="positive"):
        at_pace(run, 0.0)


def test_padded_profiles_price_the_longest_member_of_a_batch(tmp_path):
    # Truth: 1 ms + 0.1 ms per computed prefill token + 2 ms per prompt + 0.01 ms per decode KV entry.
    rows = []
    for n, w in ((1, 16), (1, 128), (4, 32), (4, 128), (2, 64)):
        rows.append(row(p_tok=n * w, p_seqs=n, t=0.001 + 1e-4 * n * w + 0.002 * n))
    for b, c in ((1, 32), (4, 64), (16, 128), (8, 256)):
        rows.append(row(d_seqs=b, d_ctx=b * c, t=0.001 + 1e-5 * b * c))
    path = write_profile(tmp_path / "p.json", rows + [row(p_tok=100, p_seqs=2, t=0.023, padded_prefill_tokens=180)],
                         {"model": "m", "device": "cpu", "batching": "padded"})
    assert read_profile(path)[0][-1]["padded_prefill_tokens"] == 180
    m = MeasuredProfileModel.from_file(path)
    assert m.padded
    # Two prompts of 10 and 90 tokens cost 2 x 90 padded tokens, not 100.
    assert m.iteration_s(IterationShape((10, 90), (0, 0), ())) == pytest.approx(0.001 + 1e-4 * 180 + 0.004, rel=0.05)
    assert m.iteration_s(IterationShape((), (), (10, 100))) == pytest.approx(0.001 + 1e-5 * 200, rel=0.05)
    run = m.decode_run_s([10, 100], 5)
    loop = [m.iteration_s(IterationShape((), (), (10 + k, 100 + k))) for k in range(5)]
    assert run == pytest.approx(loop, rel=1e-9)


def test_the_fit_follows_rows_by_the_iterations_they_stand_for():
    # Two conflicting decode timings of one shape: the mean over 500 iterations wins over a single one.
    rows = [row(d_seqs=1, d_ctx=100, t=0.010, samples=500), row(d_seqs=1, d_ctx=100, t=0.020),
            row(d_seqs=1, d_ctx=400, t=0.011, samples=500), row(p_tok=64, p_seqs=1, t=0.03)]
    m = MeasuredProfileModel.fit(rows, {"batching": "padded"})
    assert m.iteration_s(IterationShape((), (), (100,))) == pytest.approx(0.010, rel=0.02)
    with pytest.raises(ValueError, match="samples"):
        write_profile("/nonexistent/never.json", [row(d_seqs=1, d_ctx=1, samples=0)], {"model": "m", "device": "d"})


def test_batch_size_corrections_follow_a_step_the_linear_features_cannot():
    # A CPU decode: batch 1 is a matrix-vector product (5 ms), batch 2 and up matrix products (8 ms + 0.1 ms/seq).
    def truth(b):
        return 0.005 if b == 1 else 0.008 + 1e-4 * b

    rows = [row(d_seqs=b, d_ctx=b * c, t=truth(b), samples=50) for b in (1, 2, 4, 8, 16) for c in (32, 256)]
    rows += [row(p_tok=w, p_seqs=1, t=0.004 + 1e-4 * w, samples=20) for w in (16, 64, 256)]
    m = MeasuredProfileModel.fit(rows, {"batching": "padded"})
    for b in (1, 2, 4, 8, 16):
        assert m.iteration_s(IterationShape((), (), [128] * b)) == pytest.approx(truth(b), rel=0.04)
    assert m.iteration_s(IterationShape((), (), [128] * 3)) == pytest.approx(truth(3), rel=0.06)  # between sizes
    assert m.decode_run_s([128, 128], 3) == pytest.approx(
        [m.iteration_s(IterationShape((), (), [128 + k] * 2)) for k in range(3)], rel=1e-9)
    # A size timed once barely moves the fit (it is shrunk towards the linear model).
    lone = MeasuredProfileModel.fit(rows + [row(d_seqs=32, d_ctx=32 * 64, t=0.1)], {"batching": "padded"})
    assert lone.iteration_s(IterationShape((), (), [64] * 32)) < 0.5 * 0.1


def test_calibrate_rows_folds_slowdown_and_overhead_into_the_grid():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4, 8)] * 2
    grid += [row(p_tok=w, p_seqs=1, t=0.003 + 1e-4 * w) for w in (16, 64, 256)]
    live = [sample(i, 1.5 * (0.002 + 0.001 * b) + 0.001, 1.5 * (0.002 + 0.001 * b), d_seqs=b, d_ctx=b * 32)
            for i, b in enumerate((1, 2, 2, 4) * 4)]
    live += [sample(20 + i, 1.2 * (0.003 + 1e-4 * 64) + 0.003, 1.2 * (0.003 + 1e-4 * 64), p_tok=64, p_seqs=1)
             for i in range(4)]
    cal = calibrate_rows(live, grid, {"batching": "padded"})
    assert cal.slowdowns["decode"] == pytest.approx(1.5, rel=0.02)
    assert cal.slowdowns["prefill"] == pytest.approx(1.2, rel=0.02)
    assert cal.overhead.base_s == pytest.approx(0.001, rel=0.02)
    assert cal.overhead.per_prompt_s == pytest.approx(0.002, rel=0.02)
    # Live rows weigh what they average; each scaled grid row one iteration.
    assert sorted(r["samples"] for r in cal.rows) == [1.0] * (4 + 3) + [4, 4, 4, 8]
    m = MeasuredProfileModel.fit(cal.rows, {"batching": "padded"})
    # Batch 8 was never seen live: the scaled grid row with the overhead predicts it.
    assert m.iteration_s(IterationShape((), (), [32] * 8)) == pytest.approx(1.5 * 0.010 + 0.001, rel=0.1)
    # A prompt length never seen live: the grid's, at the live prefill slowdown, with the prompt's overhead.
    assert m.iteration_s(IterationShape((256,), (0,), ())) == pytest.approx(1.2 * 0.0286 + 0.003, rel=0.1)
    assert set(cal.meta()) >= {"overhead_base_s", "overhead_per_prompt_s", "live_slowdown", "live_slowdown_prefill",
                               "handoff_s"}
    assert calibrate_rows(live).slowdown is None
    with pytest.raises(ValueError):
        calibrate_rows([])


def test_a_stall_is_left_out_of_the_calibration():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4)]
    grid += [row(p_tok=w, p_seqs=1, t=0.003 + 1e-4 * w) for w in (16, 64, 256)]
    live = [sample(0.02 * i, 0.004 + 0.001, 0.004, d_seqs=2, d_ctx=64) for i in range(40)]
    live += [sample(1 + 0.02 * i, 0.0094 + 0.002, 0.0094, p_tok=64, p_seqs=1) for i in range(10)]
    stalled = [*live, sample(2.0, 0.0094 + 0.29, 0.0094, p_tok=64, p_seqs=1)]  # a 290 ms pause on one prompt
    steady, stalls = split_stalls(stalled)
    assert len(stalls) == 1 and len(steady) == len(live)
    with_stall, without = calibrate_rows(stalled, grid, {}), calibrate_rows(live, grid, {})
    assert with_stall.stalls == 1 and without.stalls == 0 and with_stall.meta()["stalls"] == 1
    assert with_stall.overhead.per_prompt_s == pytest.approx(without.overhead.per_prompt_s, rel=1e-6)
    assert fit_overhead(stalled).per_prompt_s > 10 * without.overhead.per_prompt_s  # what the mean would have made of it
    assert split_stalls([]) == ([], [])


def test_a_large_batchs_dearer_live_path_is_not_a_stall():
    """The live path grows with the batch: large batches are judged against their own size's median."""
    small = [sample(0.01 * i, 0.004 + 0.0005, 0.004, d_seqs=2, d_ctx=64) for i in range(100)]
    large = [sample(2 + 0.05 * i, 0.040 + 0.006 + 0.0005 * (i % 3), 0.040, d_seqs=100, d_ctx=100 * 200)
             for i in range(30)]  # 6-7 ms: over 10 x the run's median (0.5 ms)
    paused = sample(5.0, 0.040 + 0.29, 0.040, d_seqs=100, d_ctx=100 * 200)  # a 290 ms pause on a large batch
    steady, stalls = split_stalls([*small, *large, paused])
    assert stalls == [paused] and len(steady) == len(small) + len(large)
    # a size seen too rarely to have its own median is judged against the run's
    few = [sample(9 + 0.05 * i, 0.040 + 0.006, 0.040, d_seqs=100, d_ctx=100 * 200) for i in range(STALL_MIN_PEERS - 1)]
    assert len(split_stalls([*small, *few])[1]) == len(few)


def test_live_slowdowns_fall_back_to_the_overall_ratio_for_a_kind_never_run():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4)]
    grid += [row(p_tok=w, p_seqs=1, t=0.003 + 1e-4 * w) for w in (16, 64, 256)]
    live = [sample(i, 0.01, 2 * (0.002 + 0.001 * 2), d_seqs=2, d_ctx=64) for i in range(5)]
    got = live_slowdowns(grid, {"batching": "padded"}, live)
    assert got["decode"] == pytest.approx(2.0, rel=0.05) and got["prefill"] == got["all"] == got["decode"]


# --- the workflow -----------------------------------------------------------------------------------


def _grid():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4, 8)]
    return grid + [row(p_tok=w, p_seqs=1, t=0.003 + 1e-4 * w) for w in (16, 64, 256)]


def _live():
    live = [sample(0.01 * i, 1.5 * (0.002 + 0.001 * b) + 0.001, 1.5 * (0.002 + 0.001 * b), d_seqs=b, d_ctx=b * 32,
                   handoff=None) for i, b in enumerate((1, 2, 2, 4) * 4)]
    return live + [sample(2 + 0.02 * i, 1.2 * 0.0094 + 0.003, 1.2 * 0.0094, p_tok=64, p_seqs=1, handoff=None)
                   for i in range(4)]


def test_calibrate_writes_the_profile_calibrate_rows_makes(tmp_path):
    live, grid = _live(), _grid()
    meta = {"model": "tiny-llama", "device": "cpu", "precision": "fp32"}
    done = calibrate(live, tmp_path / "own.json", meta=meta, run_ids=[7])
    rows, doc = read_profile(done.path)
    assert len(rows) == len(calibrate_rows(live).rows) == len(done.calibration.rows)
    assert doc["run_id"] == 7 and doc["timing"] == "wall" and doc["batching"] == "padded"
    assert doc["model"] == "tiny-llama" and doc["source"] == "live run 7 (as the control plane saw it, mean per shape)"
    assert doc["overhead_samples"] == len(live) and "live_slowdown" not in doc
    assert all(s.handoff_s is not None for s in done.samples) and done.meta.items() <= doc.items()
    # With a grid, as rows and metadata or as a file: its rows join the run's, scaled to it.
    grid_path = write_profile(tmp_path / "grid.json", grid, {"model": "tiny-llama", "device": "cpu", "precision": "fp32",
                                                             "batching": "padded", "interleaved": False})
    by_path = calibrate(live, tmp_path / "g1.json", grid=grid_path, meta=meta, run_ids=[7, 8])
    by_rows = calibrate(live, tmp_path / "g2.json", grid=read_profile(grid_path), meta=meta, run_ids=[7, 8])
    assert by_path.calibration.rows == by_rows.calibration.rows == calibrate_rows(live, grid, {}).rows
    assert by_path.meta["run_ids"] == [7, 8] and "run_id" not in by_path.meta
    assert by_path.meta["live_slowdown_decode"] == pytest.approx(1.5, rel=0.02)
    assert str(grid_path) in by_path.meta["source"]
    # The backend's own times: one mean row per shape (with a grid: refused, it was ignored).
    with pytest.raises(ValueError, match="does not use a grid profile"):
        calibrate(live, tmp_path / "b.json", grid=grid_path, timing="backend")
    backend = calibrate(live, tmp_path / "b.json", timing="backend")
    assert backend.meta["timing"] == "backend" and backend.calibration.slowdown is None
    assert backend.calibration.rows == aggregate_rows(s.row for s in live)
    with pytest.raises(ValueError, match="timing"):
        calibrate(live, tmp_path / "x.json", timing="cpu")
    with pytest.raises(ValueError, match="no live iterations"):
        calibrate([], tmp_path / "x.json")


def test_calibrate_at_another_pace_is_calibrate_rows_of_the_paced_samples(tmp_path):
    joined = join_runs(_live(), _live())
    done = calibrate(joined, tmp_path / "p.json", grid=(_grid(), {}), pace=1.2)
    again = calibrate_rows(at_pace(joined, 1.2), _grid(), {})
    assert done.calibration.rows == again.rows and done.calibration.slowdown == again.slowdown
    assert done.calibration.slowdown == pytest.approx(1.2 * calibrate_rows(joined, _grid(), {}).slowdown)
    assert "1.200x" in done.meta["source"]


def test_repeated_calibrations_are_priced_on_the_same_iterations_and_the_median_one_named(tmp_path):
    live = _live()
    # the same window calibrated three times, the machine 30% slower in the second and 10% faster in the third
    paths = [calibrate(live, tmp_path / f"r{k}.json", grid=(_grid(), {}), pace=pace).path
             for k, pace in enumerate((1.0, 1.3, 0.9))]
    rows = [s.row for s in live]
    got = repeat_spread(paths, rows)
    assert got.iterations == len(rows) and got.prices_s == tuple(profile_price_s(p, rows) for p in paths)
    assert got.prices_s[2] < got.prices_s[0] < got.prices_s[1]  # the backend part scales with the pace
    assert got.median_index == 0 and got.relative_to_median()[0] == 0
    assert got.relative_to_median()[1] > 0 > got.relative_to_median()[2]
    mean = sum(got.prices_s) / 3
    assert got.spread_pct == pytest.approx(100 * (got.prices_s[1] - got.prices_s[2]) / mean)
    assert got.mean_iteration_ms() == pytest.approx([1e3 * p / len(rows) for p in got.prices_s])
    assert repeat_spread(paths[:1], rows).spread_pct is None  # one calibration: not known, not 0
    assert got.median_label == "median"


def test_an_even_count_of_repeats_freezes_the_upper_median_the_dearer_middle_one(tmp_path):
    """With two (or four) repeats the lower middle one was frozen: always the cheaper, predictions biased fast."""
    live = _live()
    paths = [calibrate(live, tmp_path / f"r{k}.json", grid=(_grid(), {}), pace=pace).path
             for k, pace in enumerate((1.0, 1.3, 0.9, 1.1))]
    rows = [s.row for s in live]
    two = repeat_spread(paths[:2], rows)
    assert two.prices_s[1] > two.prices_s[0] and two.median_index == 1 and two.median_label == "upper median"
    assert two.spread_pct is not None and two.spread_pct > 0
    four = repeat_spread(paths, rows)  # prices: 0.9 < 1.0 < 1.1 < 1.3 -> the upper middle is the 1.1 one
    assert sorted(range(4), key=lambda i: four.prices_s[i]) == [2, 0, 3, 1]
    assert four.median_index == 3 and four.median_label == "upper median"
    assert repeat_spread(paths[:3], rows).median_label == "median"
    with pytest.raises(ValueError, match="no calibrated profiles"):
        repeat_spread([], rows)
    with pytest.raises(ValueError, match="no iterations"):
        repeat_spread(paths, [])


def test_calibrate_repeats_writes_each_repeat_and_copies_the_median_one(tmp_path):
    live = _live()
    repeats = [at_pace(with_handoffs(live), pace) for pace in (1.3, 0.9, 1.0)]  # slow, fast, between
    got = calibrate_repeats(repeats, tmp_path / "frozen.json", run_ids=[[7], [8, 9], []], grid=(_grid(), {}))
    assert [f.path.name for f in got.fits] == ["frozen.repeat-1.json", "frozen.repeat-2.json", "frozen.repeat-3.json"]
    assert got.spread.median_index == 2 and got.median is got.fits[2] and got.path == tmp_path / "frozen.json"
    assert got.path.read_bytes() == got.fits[2].path.read_bytes()
    assert got.spread == repeat_spread([f.path for f in got.fits], [s.row for f in got.fits for s in f.samples])
    assert got.fits[0].meta["run_id"] == 7 and got.fits[1].meta["run_ids"] == [8, 9]
    with pytest.raises(ValueError, match="no repeats"):
        calibrate_repeats([], tmp_path / "x.json")
    with pytest.raises(ValueError, match="2 repeats but 1 lists"):
        calibrate_repeats(repeats[:2], tmp_path / "x.json", run_ids=[[1]])


def test_an_iteration_log_keeps_each_timed_iteration_as_a_sample():
    log = IterationLog()
    shape = row(p_tok=12, p_seqs=2, d_seqs=1, d_ctx=30, t=0.004, padded_prefill_tokens=16, padded_decode_context=30)
    log.cp_on_event(event=IterationTimed(1.25, "w-0", 3, 1.2, shape))
    log.cp_on_event(event=Tick(1.3))
    assert log.samples == [IterationSample("w-0", 3, 1.2, 1.25, shape)]
    assert log.samples[0].wall_s == pytest.approx(0.05) and log.samples[0].backend_s == 0.004
    log.clear()
    assert log.samples == []


# --- a real timed run -------------------------------------------------------------------------------


def test_the_driver_times_each_iteration_with_its_padding(timed_live_run):
    _, _, samples = timed_live_run
    prefills = [s for s in samples if s.row["num_prefill_seqs"]]
    decodes = [s for s in samples if s.row["num_decode_seqs"]]
    assert prefills and decodes
    for s in prefills:
        n = s.row["num_prefill_seqs"]
        assert s.row["padded_prefill_tokens"] >= s.row["num_prefill_tokens"] and s.row["padded_prefill_tokens"] % n == 0
    for s in decodes:
        assert s.row["padded_decode_context"] >= s.row["sum_decode_context"]
        assert s.wall_s >= s.backend_s > 0  # the control plane sees the backend's time plus its own
    assert sum(s.row["num_decode_seqs"] + s.row["num_prefill_seqs"] for s in samples) == 3 * 6 + 2 * 4


def test_a_recorded_run_reads_back_as_its_samples_with_hand_offs(timed_live_run):
    from controlplane.storage import make_engine

    url, run_id, samples = timed_live_run
    engine = make_engine(url)
    try:
        back = run_iterations(engine, run_id)
        run = read_live_run(engine, run_id)
        assert run_iterations(engine, run_id, worker="no-such-worker") == []
        with pytest.raises(ValueError, match=f"run {run_id} has no worker .no-such-worker.; its iterations are of "
                                             "tiny-0"):
            read_live_run(engine, run_id, worker="no-such-worker")
    finally:
        engine.dispose()
    assert [(s.batch_id, s.row) for s in back] == [(s.batch_id, s.row) for s in samples]
    assert all(a.wall_s == pytest.approx(b.wall_s) for a, b in zip(back, samples))
    assert run.samples == back and run.meta["model"] == "tiny-llama" and run.meta["device"] == "cpu"
    timed = with_handoffs(back)
    assert all(0 <= s.handoff_s <= HANDOFF_MAX_S and s.effective_s >= s.wall_s for s in timed)
    # The worker stays busy through the run: batches follow each other through a short hand-off.
    by_start = sorted(timed, key=lambda s: s.start_s)
    assert any(b.start_s - a.end_s == pytest.approx(a.handoff_s) for a, b in zip(by_start, by_start[1:]))
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(samples_table(back, "t"))
    text = console.export_text()
    assert "decode x" in text and "prefill x" in text and "hand-off" in text


def test_without_normalisation_each_runs_rows_keep_the_pace_they_ran_at(tmp_path):
    # A light run's decodes of 1 and a heavy run's of 8, the heavy run on a machine 20% slower; one shape (2) in both.
    light = [sample(0.1 * i, 0.004, 0.003, d_seqs=b, d_ctx=b * 32, handoff=None) for i, b in enumerate((1, 2) * 20)]
    heavy = [sample(0.01 * i, 1.2 * 0.011, 1.2 * 0.010, d_seqs=b, d_ctx=b * 32, handoff=None)
             for i, b in enumerate((8, 2) * 20)]
    joined = join_runs(light, heavy)
    by_shape = {int(r["num_decode_seqs"]): r["iteration_s"] for r in calibrate_rows(joined, normalise=False).rows}
    assert by_shape[1] == pytest.approx(0.004, rel=0.01)  # as it ran
    assert by_shape[8] == pytest.approx(1.2 * 0.011, rel=0.01)
    normalised = {int(r["num_decode_seqs"]): r["iteration_s"] for r in calibrate_rows(joined).rows}
    assert normalised[8] < 0.99 * by_shape[8]  # the slow run's own shape priced at the runs' average speed
    done = calibrate(joined, tmp_path / "u.json", normalise=False)
    assert read_profile(done.path)[1]["machine_speed_normalised"] is False
    assert "machine_speed_normalised" not in calibrate(joined, tmp_path / "n.json").meta
