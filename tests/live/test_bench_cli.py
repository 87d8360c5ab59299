"""`controlplane profile`, `bench quant`, `calibrate` and the pieces they share (tiny models, tiny grids)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import bench
from controlplane.cli.bench import (
    IterationSample,
    Overhead,
    TimedPool,
    add_overhead,
    aggregate_rows,
    calibrate_rows,
    fit_overhead,
)
from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel, read_profile, write_profile


def invoke(*args):
    result = CliRunner().invoke(bench.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def row(p_tok=0, p_seqs=0, d_seqs=0, d_ctx=0, t=0.01, **extra):
    return {"num_prefill_tokens": p_tok, "num_prefill_seqs": p_seqs, "num_decode_seqs": d_seqs,
            "sum_decode_context": d_ctx, "sum_prefill_context": 0, "iteration_s": t, **extra}


def sample(start, wall, backend, **shape):
    return IterationSample("w-0", 0, start, start + wall, row(t=backend, **shape))


# --- pure pieces ------------------------------------------------------------------------------------


def test_overhead_is_the_mean_extra_time_per_iteration_and_sequence():
    samples = [sample(0, 0.010 + 0.001 + 0.0002 * n, 0.010, d_seqs=n, d_ctx=10 * n) for n in (1, 2, 4, 8) * 5]
    oh = fit_overhead(samples)
    assert oh.base_s == pytest.approx(0.001, rel=1e-3) and oh.per_seq_s == pytest.approx(0.0002, rel=1e-3)
    assert oh.at(10) == pytest.approx(0.003) and oh.samples == 20
    rows = add_overhead([row(d_seqs=2, d_ctx=20, t=0.01)], oh)
    assert rows[0]["iteration_s"] == pytest.approx(0.0114)
    with pytest.raises(ValueError):
        fit_overhead([])


def test_aggregate_rows_averages_each_shape():
    rows = [row(d_seqs=4, d_ctx=400, t=0.010), row(d_seqs=4, d_ctx=404, t=0.014), row(p_tok=64, p_seqs=1, t=0.03),
            row(d_seqs=4, d_ctx=4000, t=0.02, padded_decode_context=4000)]
    out = sorted(aggregate_rows(rows), key=lambda r: (r["num_prefill_seqs"], r["sum_decode_context"]))
    assert len(out) == 3
    assert out[0]["iteration_s"] == pytest.approx(0.012) and out[0]["sum_decode_context"] == pytest.approx(402)
    assert "padded_decode_context" in out[1] and "padded_decode_context" not in out[0]


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


def test_calibrate_rows_folds_slowdown_and_overhead_into_the_grid():
    grid = [row(d_seqs=b, d_ctx=b * 32, t=0.002 + 0.001 * b) for b in (1, 2, 4, 8)] * 2
    grid += [row(p_tok=w, p_seqs=1, t=0.003 + 1e-4 * w) for w in (16, 64, 256)]
    live = [sample(i, 1.5 * (0.002 + 0.001 * b) + 0.001, 1.5 * (0.002 + 0.001 * b), d_seqs=b, d_ctx=b * 32)
            for i, b in enumerate((1, 2, 2, 4) * 4)]
    cal = calibrate_rows(live, grid, {"batching": "padded"})
    assert cal.slowdown == pytest.approx(1.5, rel=0.02)
    assert cal.overhead.base_s == pytest.approx(0.001, rel=0.02)
    m = MeasuredProfileModel.fit(cal.rows, {"batching": "padded"})
    # Batch 8 was never seen live: the scaled grid row with the overhead predicts it.
    assert m.iteration_s(IterationShape((), (), [32] * 8)) == pytest.approx(1.5 * 0.010 + 0.001, rel=0.1)
    assert set(cal.meta()) >= {"overhead_base_s", "live_slowdown"}
    assert calibrate_rows(live).slowdown is None


# --- the commands -----------------------------------------------------------------------------------


def test_profile_writes_a_profile_the_simulator_loads(tmp_path):
    out = tmp_path / "tiny.json"
    res = invoke("profile", "--preset", "tiny-llama", "--device", "cpu", "--threads", "1", "--grid", "small",
                 "--repeats", "1", "--max-seq-len", "64", "-o", out, "--no-progress")
    assert "wrote" in res.output and "latency_model: measured" in res.output
    doc = json.loads(out.read_text())
    assert doc["format"] == "controlplane-profile/1" and doc["grid"] == "small" and doc["batching"] == "padded"
    assert doc["model"] == "tiny-llama" and doc["precision"] == "fp32" and len(doc["rows"]) >= 5
    assert MeasuredProfileModel.from_file(out).iteration_s(IterationShape((), (), (32,))) > 0


def test_unknown_grid_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(bench.app, ["profile", "--grid", "huge", "-o", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unknown grid" in res.output


def test_bench_quant_prints_the_table_and_writes_json(tmp_path):
    path = tmp_path / "q.json"
    res = invoke("bench", "quant", "--preset", "tiny-llama", "--device", "cpu", "--variants", "fp32,int8",
                 "--batch-sizes", "1,2", "--prompt-tokens", "4", "--new-tokens", "3", "--repeats", "1",
                 "--threads", "1", "--json", path, "--no-progress")
    assert "tok/s" in res.output
    rows = json.loads(path.read_text())
    ok = {(r["variant"], r["batch_size"]) for r in rows if r["status"] == "ok"}
    assert {("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)} <= ok
    assert all(r["model_mb"] > 0 and r["tokens_per_s"] > 0 for r in rows)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A short recorded live run whose iterations were timed (what `calibrate` reads)."""
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool import LocalThreadPool
    from controlplane.testing import make_config

    url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'live.db'}"
    cfg = make_config(storage={"url": url}, cluster={"models": [
        {"name": "tiny", "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}}]})

    async def main():
        pool = TimedPool(LocalThreadPool(cpu_threads=1))
        driver = LiveDriver(cfg, pool=pool, extra_plugins=[pool.observer])
        pool.attach(driver)
        await driver.start(wait_ready_s=120)
        try:
            first = [await driver.submit([5 + i] * (4 + 3 * i), max_tokens=6, ignore_eos=True) for i in range(3)]
            await asyncio.sleep(0.02)
            later = [await driver.submit([9] * 20, max_tokens=4, ignore_eos=True) for _ in range(2)]
            results = [await h.result() for h in first + later]
        finally:
            await driver.close()
        return driver.run_id, pool.samples, results

    run_id, samples, results = asyncio.run(main())
    assert all(r.ok for r in results)
    return url, run_id, samples


def test_timed_pool_sees_each_iteration_with_its_padding(live_run):
    _, _, samples = live_run
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


def test_calibrate_fits_a_profile_from_the_recorded_run(live_run, tmp_path):
    url, run_id, samples = live_run
    out = tmp_path / "cal.json"
    res = invoke("calibrate", run_id, "--db", url, "-o", out)
    assert "live overhead per iteration" in res.output
    rows, meta = read_profile(out)
    assert meta["run_id"] == run_id and meta["batching"] == "padded" and meta["model"] == "tiny-llama"
    assert meta["overhead_samples"] == len(samples) and rows
    # With a grid profile of the same worker: its rows, scaled to the run, join the run's own.
    grid = tmp_path / "grid.json"
    write_profile(grid, [row(d_seqs=b, d_ctx=16 * b, t=0.003 + 0.0002 * b) for b in (1, 2, 4, 8, 16)]
                  + [row(p_tok=w, p_seqs=1, t=0.004 + 5e-5 * w) for w in (8, 32, 128)],
                  {"model": "tiny-llama", "device": "cpu", "batching": "padded"})
    both = tmp_path / "both.json"
    res = invoke("calibrate", run_id, "--db", url, "-o", both, "--profile", grid)
    assert "the profile" in res.output
    rows2, meta2 = read_profile(both)
    assert len(rows2) == len(rows) + 8 and meta2["live_slowdown"] > 0


def test_calibrate_refuses_runs_without_timings(tmp_path):
    from controlplane.testing import make_trace
    from sim.replay import replay
    from controlplane.testing import make_config

    url = f"sqlite:///{tmp_path / 'sim.db'}"
    summary, _ = replay(make_trace(3), make_config(storage={"url": url}))
    res = CliRunner().invoke(bench.app, ["calibrate", str(summary["run_id"]), "--db", url])
    assert res.exit_code == 2 and "needs a live run" in res.output
    res = CliRunner().invoke(bench.app, ["calibrate", "999", "--db", url])
    assert res.exit_code == 2 and "not found" in res.output


def test_overhead_dataclass_round_trip():
    oh = Overhead(0.001, 0.0001, 10, 0.0011)
    assert oh.as_dict()["overhead_base_s"] == 0.001 and oh.at(0) == 0.001
