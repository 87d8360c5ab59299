"""`controlplane profile`, `bench quant`, `calibrate` (tiny models, tiny grids; the calibration pieces are
tested in test_calibration.py)."""

from __future__ import annotations

import json
import re

import pytest
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


def test_a_noisy_grid_profile_is_flagged_with_what_to_do():
    """A grid timed while other jobs ran fitted its own rows 29% off at the median, and nothing said so."""
    text = bench.noisy_fit_warning({"rows": 264.0, "median_rel_err": 0.293, "p90_rel_err": 0.485})
    assert "29% at the median" in text and "profile again" in text and "--repeats" in text
    assert bench.noisy_fit_warning({"rows": 264.0, "median_rel_err": 0.035, "p90_rel_err": 0.14}) == ""
    assert bench.noisy_fit_warning({}) == ""


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
    # What to do with it next, as `controlplane profile` says of its own file.
    assert "latency_model: measured" in " ".join(res.output.split())
    rows, meta = read_profile(out)
    assert meta["run_id"] == run_id and meta["batching"] == "padded" and meta["model"] == "tiny-llama"
    assert meta["overhead_samples"] == len(samples) and rows
    # With a grid profile of the same worker: its rows, scaled to the run, join the run's own.
    grid = tmp_path / "grid.json"
    write_profile(grid, [row(d_seqs=b, d_ctx=16 * b, t=0.003 + 0.0002 * b) for b in (1, 2, 4, 8, 16)]
                  + [row(p_tok=w, p_seqs=1, t=0.004 + 5e-5 * w) for w in (8, 32, 128)],
                  {"model": "tiny-llama", "device": "cpu", "batching": "padded", "precision": "fp32"})
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
    db = url.removeprefix("sqlite:///")  # -o naming the database read: refused, it was replaced by the profile
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "-o", db])
    assert res.exit_code == 2 and f"-o {db}: that is the SQLite database" in " ".join(res.output.split())
    with open(db, "rb") as f:
        assert f.read(16) == b"SQLite format 3\0"
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--worker", "nobody"])
    text = " ".join(res.output.split())  # (it said the run recorded no timings, advising record_iterations)
    assert res.exit_code == 2 and f"run {run_id} has no worker 'nobody'; its iterations are of" in text, text
    # A grid profile of another model: refused (its rows were fitted to this run and labelled as the other)
    other = tmp_path / "other.json"
    write_profile(other, [row(d_seqs=1, d_ctx=16, t=0.003), row(p_tok=8, p_seqs=1, t=0.004)],
                  {"model": "small-llama", "device": "cpu", "batching": "padded"})
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--profile", str(other), "-o",
                                         str(tmp_path / "x.json")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "is of model 'small-llama'" in text and "served 'tiny-llama'" in text, text
    # A file that is not JSON (a trace given by mistake): named
    (tmp_path / "trace.csv").write_text("a,b\n1,2\n")
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--profile",
                                         str(tmp_path / "trace.csv"), "-o", str(tmp_path / "y.json")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "trace.csv: not a controlplane-profile/1 file (not JSON" in text, text
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--timing", "cpu"])
    assert res.exit_code == 2 and "--timing must be wall or backend" in res.output
    # --timing backend ignored --profile (the same file either way): refused, naming both
    res = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--timing", "backend", "--profile",
                                         str(grid), "-o", str(tmp_path / "z.json")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "--timing backend" in text and "--profile" in text, text
    assert not (tmp_path / "z.json").exists()


def test_calibrate_refuses_runs_without_timings(tmp_path):
    from controlplane.testing import make_trace
    from sim.replay import replay
    from controlplane.testing import make_config

    url = f"sqlite:///{tmp_path / 'sim.db'}"
    summary, _ = replay(make_trace(3), make_config(storage={"url": url}))
    res = CliRunner().invoke(bench.app, ["calibrate", str(summary["run_id"]), "--db", url])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "needs a live run" in text
    # which database it looked in (a forgotten --db reads ./controlplane.db) and where a live run comes from
    assert f"run {summary['run_id']} in {url} is a sim run" in text and "controlplane live-replay" in text
    res = CliRunner().invoke(bench.app, ["calibrate", "999", "--db", url])
    assert res.exit_code == 2 and "not found" in res.output


def test_calibrate_names_a_database_file_that_does_not_exist_and_makes_none(tmp_path):
    """It said 'database: OperationalError: no such table: run' and left an empty file behind."""
    missing = tmp_path / "typo.db"
    res = CliRunner().invoke(bench.app, ["calibrate", "1", "--db", f"sqlite:///{missing}", "-o",
                                         str(tmp_path / "p.json")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"no such file ({missing})" in text and "check --db" in text, text
    assert not missing.exists()


def test_calibrate_repeats_freezes_the_median_and_prints_the_spread(timed_live_repeats, tmp_path):
    from sim.calibration import repeat_spread

    url, (a, b, c) = timed_live_repeats
    out = tmp_path / "cal.json"
    res = invoke("calibrate", a, f"{b}+{c}", c, "--db", url, "-o", out)
    text = " ".join(res.output.split())  # the console wraps long lines
    assert "repeats of the calibration" in text and "is frozen" in text
    kept = [tmp_path / f"cal.repeat-{k}.json" for k in (1, 2, 3)]
    assert all(p.exists() for p in kept)
    assert read_profile(kept[1])[1]["run_ids"] == [b, c] and read_profile(kept[2])[1]["run_id"] == c
    # The frozen profile is the repeat whose price for every repeat's iterations is the median one.
    from controlplane.live.iteration_log import read_live_run
    from controlplane.live.iteration_samples import join_runs, with_handoffs_once
    from controlplane.storage import make_engine

    engine = make_engine(url)
    try:
        runs = {i: read_live_run(engine, i).samples for i in (a, b, c)}
    finally:
        engine.dispose()
    rows = [s.row for s in with_handoffs_once(runs[a]) + join_runs(runs[b], runs[c]) + with_handoffs_once(runs[c])]
    spread = repeat_spread(kept, rows)
    assert out.read_bytes() == kept[spread.median_index].read_bytes()
    assert f"{spread.spread_pct:.1f}% apart" in text and f"the median, repeat {spread.median_index + 1}, is frozen" in text
    assert f"{spread.median_index + 1} (frozen: median)" in text and "vs median" in text


def test_calibrate_two_repeats_freezes_the_upper_median_and_says_so(timed_live_repeats, tmp_path):
    """Of two repeats the lower middle one - always the cheaper - was frozen and called 'the median'."""
    from controlplane.live.iteration_log import read_live_run
    from controlplane.live.iteration_samples import with_handoffs_once
    from controlplane.storage import make_engine
    from sim.calibration import repeat_spread

    url, (a, b, _) = timed_live_repeats
    out = tmp_path / "cal.json"
    res = invoke("calibrate", a, b, "--db", url, "-o", out)
    text = " ".join(res.output.split())
    kept = [tmp_path / f"cal.repeat-{k}.json" for k in (1, 2)]
    engine = make_engine(url)
    try:
        rows = [s.row for i in (a, b) for s in with_handoffs_once(read_live_run(engine, i).samples)]
    finally:
        engine.dispose()
    spread = repeat_spread(kept, rows)
    dearer = max(range(2), key=lambda i: (spread.prices_s[i], i))
    assert spread.median_index == dearer and out.read_bytes() == kept[dearer].read_bytes()
    assert f"{dearer + 1} (frozen: upper median)" in text and "vs upper median" in text
    assert "the upper median (an even count has no middle one" in text and f"repeat {dearer + 1}, is frozen" in text


def test_calibrate_names_a_bad_run_argument(tmp_path):
    res = CliRunner().invoke(bench.app, ["calibrate", "3+x", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert res.exit_code == 2 and "expected a run id or ids joined by '+'" in res.output


@pytest.mark.parametrize(("options", "message"), [
    (["--preset", "nope"], "error: --preset: unknown preset 'nope'; known:"),
    (["--device", "gpu"], "error: --device: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_profile_names_a_bad_preset_or_device_by_its_option(options, message):
    """It printed pydantic's four lines ("1 validation error for WorkerModelSettings ... preset ...")."""
    res = CliRunner().invoke(bench.app, ["profile", *options, "--grid", "small"])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


@pytest.mark.parametrize(("options", "message"), [
    (["--variants", "fp8"], "error: --variants: 'fp8' in 'fp8' is not PRECISION or PRECISION+compile"),
    (["--variants", ""], "error: --variants: '' in '' is not PRECISION"),
    (["--variants", "int8+fast"], "error: --variants: 'int8+fast'"),
    (["--batch-sizes", "0"], "error: --batch-sizes: '0' in '0' is not a whole number of at least 1"),
    (["--batch-sizes", "1,x"], "error: --batch-sizes: 'x' in '1,x' is not a whole number of at least 1"),
])
def test_bench_quant_names_a_bad_option_and_exits_2(options, message):
    """--variants fp8 was a row "error: KeyError: 'fp8'" and exit 0, --batch-sizes 0 an "ok" row of batch 0,
    --variants '' an empty table, --batch-sizes 1,x Python's "invalid literal for int()"."""
    res = CliRunner().invoke(bench.app, ["bench", "quant", "--preset", "tiny-llama", "--device", "cpu", *options,
                                         "--no-progress"])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_bench_quant_options_have_help():
    res = CliRunner().invoke(bench.app, ["bench", "quant", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "Prompt length of every sequence" in text and "Tokens each sequence generates" in text, text


@pytest.mark.parametrize("command", [["profile"], ["bench", "quant"]])
def test_a_missing_model_path_is_named_as_live_replay_names_it(command, tmp_path):
    """profile said "Repo id must use alphanumeric chars..."; bench quant put that in an OSError row, exit 0."""
    missing = tmp_path / "nonexistent"
    res = CliRunner().invoke(bench.app, [*command, "--model-path", str(missing), "--no-progress"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, text
    assert f"--model-path: model path {missing} is not a directory (models are never downloaded)" in text, text


def test_a_max_seq_len_that_leaves_shapes_out_of_the_grid_says_which():
    """`--grid small --max-seq-len 100` wrote 57 rows instead of 144: every 256-token prefill and context gone."""
    from controlplane.live.profiling import ProfileGrid

    small = bench.grids()["small"]
    assert small.left_out(2048) == ([], [], small.left_out(100)[2])
    tokens, contexts, needed = small.left_out(100)
    assert tokens == [256] and contexts == [256] and needed > 256 and small.left_out(needed)[:2] == ([], [])
    assert small.left_out(needed - 1)[1] == [256]  # the decode batch at 256 grows by one token per timed step
    text = " ".join(bench.left_out_warning(small, 100).split())
    assert "--max-seq-len 100 leaves prefills of 256 tokens and decodes at context 256 out" in text, text
    assert f"--max-seq-len {needed} times them all" in text and bench.left_out_warning(small, needed) == ""
    limits = ProfileGrid.from_limits(100, 8, 2, 1)
    assert limits.left_out(109)[1] == [108]  # the context `--grid limits` raised --max-seq-len to did not fit


def test_profile_limits_says_it_raised_max_seq_len_and_marks_extrapolated_shapes(tmp_path):
    """It raised --max-seq-len 64 to 109 unsaid (still leaving the longest contexts out), and printed
    "decode 32 seqs @ 256" from a grid of 2 sequences at context 108 with no note."""
    out = tmp_path / "lim.json"
    res = invoke("profile", "--preset", "tiny-llama", "--device", "cpu", "--threads", "1", "--grid", "limits",
                 "--max-prompt-tokens", "24", "--max-output-tokens", "4", "--max-batch", "2", "--max-seq-len", "16",
                 "--repeats", "1", "-o", out, "--no-progress")
    text = " ".join(res.output.split())
    needed = bench.grids()["small"].from_limits(24, 4, 2, 1).left_out(16)[2]
    assert f"--max-seq-len raised from 16 to {needed}" in text and "leaves" not in text, text
    assert "decode 32 seqs @ 256 *" in text and "* beyond every row of the profile: extrapolated" in text, text
    rows, _ = read_profile(out)
    assert max(r["sum_decode_context"] / r["num_decode_seqs"] for r in rows if r["num_decode_seqs"]) >= 28


def test_beyond_rows_marks_shapes_past_every_timed_row():
    rows = [row(d_seqs=8, d_ctx=8 * 300), row(p_tok=4 * 64, p_seqs=4)]
    assert not bench.beyond_rows(IterationShape((), (), (256,) * 8), rows)
    assert bench.beyond_rows(IterationShape((), (), (256,) * 32), rows)
    assert bench.beyond_rows(IterationShape((128,), (0,), ()), rows)
    assert not bench.beyond_rows(IterationShape((64,) * 4, (0,) * 4, ()), rows)


@pytest.mark.parametrize(("runs", "message"), [
    (["1", "1"], "run 1 is named as more than one repeat in 1 1"),
    (["1+2", "2+1"], "run 1+2 is named as more than one repeat"),
    (["1+1"], "run '1+1' names a run more than once"),
])
def test_calibrate_refuses_a_run_named_twice(runs, message):
    """`calibrate 1 1` priced the same iterations "0.0% apart"; `1+1` joined the run with itself."""
    with pytest.raises(ValueError, match=re.escape(message)):
        bench.parse_repeats(runs)
    assert bench.parse_repeats(["1", "2+1", "2"]) == [[1], [2, 1], [2]]  # (a run in two different repeats: kept)


def test_calibrating_an_interrupted_run_says_so(monkeypatch):
    """An interrupted run (45 iterations, 3 of 113 requests completed) was calibrated on without a note."""
    import controlplane.storage

    runs = {1: {"status": "interrupted", "summary": {"num_requests": 113, "num_completed": 3}},
            2: {"status": "finished", "summary": {"num_requests": 9, "num_completed": 9}}}
    monkeypatch.setattr(controlplane.storage, "get_run", lambda engine, run_id: runs[run_id])
    text = bench.unfinished_run_warning(None, 1, 45)
    assert text.startswith("run 1 did not finish (interrupted: 45 iterations, 3 of 113 requests completed)"), text
    assert bench.unfinished_run_warning(None, 2, 100) == ""
