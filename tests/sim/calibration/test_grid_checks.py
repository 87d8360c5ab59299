"""A grid profile that cannot price the run's iterations is refused, naming the file (not priced at 0 s or 1.00x)."""

from __future__ import annotations

import pytest

from controlplane.hardware.profile_format import write_profile
from controlplane.live.iteration_samples import IterationSample
from sim.calibration import calibrate, live_slowdowns
from sim.latency.measured import MeasuredProfileModel

META = {"model": "tiny-llama", "device": "cpu", "batching": "padded", "precision": "fp32"}


def row(p_tok=0, p_seqs=0, d_seqs=0, d_ctx=0, t=0.01):
    return {"num_prefill_tokens": p_tok, "num_prefill_seqs": p_seqs, "num_decode_seqs": d_seqs,
            "sum_decode_context": d_ctx, "sum_prefill_context": 0, "iteration_s": t}


DECODES = [row(d_seqs=b, d_ctx=16 * b, t=0.003 + 0.0002 * b) for b in (1, 2, 4, 8)]
PREFILLS = [row(p_tok=w, p_seqs=1, t=0.004 + 5e-5 * w) for w in (8, 32, 128)]


def samples():
    out, t = [], 0.0
    for k in range(40):
        r = row(p_tok=16, p_seqs=1, t=0.006) if k % 8 == 0 else row(d_seqs=2, d_ctx=40 + k, t=0.004)
        out.append(IterationSample("w-0", k, t, t + r["iteration_s"] * 1.2, r, 0.0002))
        t += r["iteration_s"] * 1.2 + 0.0002
    return out


@pytest.mark.parametrize(("rows", "message"), [
    (DECODES, "no prefill rows"),
    (PREFILLS, "no decode rows"),
    ([{**r, "iteration_s": 0.0} for r in DECODES + PREFILLS], "every row's iteration_s is 0"),
    (DECODES + [{**r, "iteration_s": 0.0} for r in PREFILLS], "every prefill row's iteration_s is 0"),
])
def test_a_profile_that_cannot_price_a_kind_is_refused_naming_the_file(tmp_path, rows, message):
    """all_zero.json replayed with TTFT/E2E 0 at every percentile; decode_only.json priced a 4x256 prefill at 5 ms."""
    path = write_profile(tmp_path / "bad.json", rows, META)
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        MeasuredProfileModel.from_file(path)
    with pytest.raises(ValueError, match=f"{path}: {message}"):  # calibrate printed "live backend 1.00x / 2.44x"
        calibrate(samples(), tmp_path / "out.json", grid=path, meta=META, run_ids=[1])
    assert not (tmp_path / "out.json").exists()


def test_a_grid_of_both_kinds_still_loads_and_calibrates(tmp_path):
    path = write_profile(tmp_path / "grid.json", DECODES + PREFILLS, META)
    assert MeasuredProfileModel.from_file(path).fit_stats["rows"] == 7
    done = calibrate(samples(), tmp_path / "out.json", grid=path, meta=META, run_ids=[1])
    assert done.calibration.slowdown > 1


def test_a_grid_that_prices_nothing_says_so_instead_of_1x():
    zero = [{**r, "iteration_s": 0.0} for r in DECODES + PREFILLS]
    with pytest.raises(ValueError, match="at 0 s: nothing to compare"):
        live_slowdowns(zero, {**META, "path": "zero.json"}, samples())


@pytest.mark.parametrize(("key", "value", "message"), [
    ("precision", "int8", "is of precision 'int8', the live run 1 ran in 'fp32'"),
    ("device", "cuda:0", "is of device 'cuda:0', the live run 1 ran on 'cpu'"),
    ("model", "small-llama", "is of model 'small-llama', the live run 1 served 'tiny-llama'"),
])
def test_a_grid_of_another_worker_is_refused(tmp_path, key, value, message):
    """tiny-int8.json calibrated an fp32 run and wrote "precision": "int8" (the grid's labels won)."""
    path = write_profile(tmp_path / "grid.json", DECODES + PREFILLS, {**META, key: value})
    with pytest.raises(ValueError, match=f"grid profile {path} {message}"):
        calibrate(samples(), tmp_path / "out.json", grid=path, meta=META, run_ids=[1])


def test_a_compiled_grid_of_an_uncompiled_run_is_refused_and_the_output_says_the_runs_compile_mode(tmp_path):
    """`calibrate --profile grid-compiled.json` of an uncompiled run was accepted and wrote "compiled": true."""
    compiled = write_profile(tmp_path / "grid-compiled.json", DECODES + PREFILLS, {**META, "compiled": True})
    with pytest.raises(ValueError, match=f"grid profile {compiled} is of compiled True, the live run 1 ran with "
                                         "compiled False: profile the same worker .*--compile"):
        calibrate(samples(), tmp_path / "out.json", grid=compiled, meta={**META, "compiled": False}, run_ids=[1])
    plain = write_profile(tmp_path / "grid.json", DECODES + PREFILLS, META)  # (the format's default: not compiled)
    with pytest.raises(ValueError, match="is of compiled False, the live run 1 ran with compiled True"):
        calibrate(samples(), tmp_path / "out.json", grid=plain, meta={**META, "compiled": True}, run_ids=[1])
    done = calibrate(samples(), tmp_path / "out.json", grid=compiled, meta={**META, "compiled": True}, run_ids=[1])
    assert done.meta["compiled"] is True
    done = calibrate(samples(), tmp_path / "out.json", grid=compiled, meta=META, run_ids=[1])  # (a run that did not
    assert done.meta["compiled"] is True  # say: before workers reported it; not compared, the grid's kept)
    assert calibrate(samples(), tmp_path / "own.json", meta={**META, "compiled": False}).meta["compiled"] is False


def test_the_calibrated_profile_carries_the_runs_labels(tmp_path):
    path = write_profile(tmp_path / "grid.json", DECODES + PREFILLS, {**META, "device": "cpu:0", "device_name": "x86"})
    done = calibrate(samples(), tmp_path / "out.json", grid=path, meta={**META, "device_name": "cpu"}, run_ids=[1])
    assert (done.meta["device"], done.meta["device_name"], done.meta["precision"]) == ("cpu", "cpu", "fp32")


def test_backend_timing_with_a_grid_is_refused(tmp_path):
    """`calibrate --timing backend --profile grid.json` ignored the grid: the same sha256 as without it."""
    path = write_profile(tmp_path / "grid.json", DECODES + PREFILLS, META)
    with pytest.raises(ValueError, match="timing 'backend' .* does not use a grid profile"):
        calibrate(samples(), tmp_path / "out.json", grid=path, timing="backend", meta=META, run_ids=[1])
    assert calibrate(samples(), tmp_path / "out.json", timing="backend", meta=META).meta["timing"] == "backend"
