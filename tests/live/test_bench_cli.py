"""`controlplane profile`, `bench quant`, `calibrate` (tiny models, tiny grids; the calibration pieces are
tested in test_calibration.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import bench
from controlplane.hardware.profile_format import read_profile, write_profile
from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel


def invoke(*args):
    result = CliRunner().invoke(bench.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def row(p_tok=0, p_seqs=0, d_seqs=0, d_ctx=0, t=0.01, **extra):
    return {"num_prefill_tokens": p_tok, "num_prefill_seqs": p_seqs, "num_decode_seqs": d_seqs,
            "sum_decode_context": d_ctx, "sum_prefill_context": 0, "iteration_s": t, **extra}


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


def test_calibrate_fits_a_profile_from_the_recorded_run(timed_live_run, tmp_path):
    url, run_id, samples = timed_live_run
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
    assert len(rows2) == len(rows) + 8 and meta2["live_slowdown"] > 0 and meta2["run_id"] == run_id
    # The engine's own times, one worker's iterations.
    backend = tmp_path / "backend.json"
    res = invoke("calibrate", run_id, "--db", url, "-o", backend, "--timing", "backend", "--worker",
                 samples[0].worker_id)
    assert read_profile(backend)[1]["timing"] == "backend" and "the profile" not in res.output
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--worker", "nobody"])
    assert res.exit_code == 2 and "no iteration timings" in res.output
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--timing", "cpu"])
    assert res.exit_code == 2 and "--timing must be wall or backend" in res.output


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
