from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sim.latency import IterationShape, LatencyModel, LinearLatencyModel
from sim.latency.measured import FEATURES, PROFILE_FORMAT, MeasuredProfileModel, read_profile, write_profile
from sim.latency.registry import BUILTIN_LATENCY_MODELS, make_latency_model
from sim.latency.roofline import RooflineModel
from sim.latency.splitwise import SplitwiseModel
from sim.latency.vidur_profile import PROFILES_DIR, ProfileNotFoundError

# ----------------------------------------------------------------------------- splitwise


def test_splitwise_reproduces_profile_medians():
    df = pd.read_csv(PROFILES_DIR / "splitwise_sim/perf_model.csv")
    sub = df[(df.model == "llama2-70b") & (df.hardware == "a100-80gb") & (df.tensor_parallel == 2)]
    m = SplitwiseModel("llama2-70b", "a100", 2)
    for tokens, g in sub.assign(t=sub.prompt_size * sub.batch_size).groupby("t"):
        if tokens <= 4096:
            assert m.iteration_s(IterationShape((int(tokens),))) == pytest.approx(g.prompt_time.median() / 1e3)


def test_splitwise_mixed_batch_and_errors():
    m = SplitwiseModel("meta-llama/Llama-2-70b-hf", "h100", 4)
    pre = m.iteration_s(IterationShape((1000,)))
    mixed = m.iteration_s(IterationShape((999,), (), (5,)))
    assert mixed == pytest.approx(1.1 * pre)
    assert m.iteration_s(IterationShape()) == 0.0
    with pytest.raises(ProfileNotFoundError, match="available"):
        SplitwiseModel("llama2-70b", "l4", 2)


# ----------------------------------------------------------------------------- roofline


def test_roofline_monotone_in_tokens_and_context():
    m = RooflineModel("meta-llama/Llama-2-70b-hf", "a100", 2)
    t = [m.iteration_s(IterationShape((n,))) for n in (1, 64, 512, 2048, 8192)]
    assert all(a <= b for a, b in zip(t, t[1:])) and t[-1] > 2 * t[2]
    d = [m.iteration_s(IterationShape(decode_context_tokens=[c] * 32)) for c in (10, 1000, 10000, 100000)]
    assert all(a < b for a, b in zip(d, d[1:]))


def test_roofline_scales_with_gpu_bandwidth():
    shape = IterationShape(decode_context_tokens=[1000] * 8)  # memory bound
    times = {g: RooflineModel("meta-llama/Llama-2-7b-hf", g, 1, overhead_s=0.0).iteration_s(shape) for g in ("a100-80gb", "h100-80gb", "h200")}
    assert times["h200"] < times["h100-80gb"] < times["a100-80gb"]
    from controlplane.hardware.specs import GPUS

    ratio = GPUS["h100-80gb"].memory_bandwidth_bytes_s / GPUS["h200"].memory_bandwidth_bytes_s
    assert times["h200"] / times["h100-80gb"] == pytest.approx(ratio, rel=1e-6)
    # compute-bound prefill scales with FLOP/s instead
    big = IterationShape((8192,))
    a = RooflineModel("meta-llama/Llama-2-7b-hf", "a100", 1, overhead_s=0.0).iteration_s(big)
    h = RooflineModel("meta-llama/Llama-2-7b-hf", "h100", 1, overhead_s=0.0).iteration_s(big)
    assert a / h == pytest.approx(989 / 312, rel=0.05)


def test_roofline_precision_and_tp():
    shape = IterationShape(decode_context_tokens=[200] * 4)
    fp16 = RooflineModel("meta-llama/Llama-2-7b-hf", "a10g", 1, "fp16").iteration_s(shape)
    int8 = RooflineModel("meta-llama/Llama-2-7b-hf", "a10g", 1, "int8").iteration_s(shape)
    assert int8 < fp16
    tp1 = RooflineModel("meta-llama/Llama-2-70b-hf", "h100", 1).iteration_s(shape)
    tp4 = RooflineModel("meta-llama/Llama-2-70b-hf", "h100", 4).iteration_s(shape)
    assert tp4 < tp1
    with pytest.raises(ValueError):
        RooflineModel(compute_efficiency=0)


# ----------------------------------------------------------------------------- measured


def _truth(p_tok, d_seqs, d_ctx, p_ctx):
    return 0.004 + 6e-5 * p_tok + 4e-9 * p_tok**2 + 1.5e-4 * d_seqs + 2e-8 * d_ctx + 1e-9 * p_tok * p_ctx


def _rows(n=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ps = int(rng.integers(0, 3))
        pt = int(sum(rng.integers(16, 2048, size=ps)))
        ds = int(rng.integers(0 if ps else 1, 64))
        dc = int(sum(rng.integers(10, 4000, size=ds)))
        pc = int(rng.integers(0, 2000)) if ps else 0
        y = _truth(pt, ds, dc, pc) * (1 + rng.normal(0, 0.01))
        rows.append(dict(num_prefill_tokens=pt, num_prefill_seqs=ps, num_decode_seqs=ds, sum_decode_context=dc, sum_prefill_context=pc, iteration_s=y))
    return rows


def test_measured_round_trip(tmp_path):
    path = write_profile(tmp_path / "p.json", _rows(), {"model": "meta-llama/Llama-2-7b-hf", "device": "a10g", "compiled": True})
    doc = json.loads(path.read_text())
    assert doc["format"] == PROFILE_FORMAT and doc["compiled"] is True and doc["precision"] == "fp16"
    rows, meta = read_profile(path)
    assert len(rows) == 400 and meta["device"] == "a10g"
    m = MeasuredProfileModel.from_file(path)
    assert len(m.coef) == len(FEATURES) and all(c >= 0 for c in m.coef)
    assert m.fit_stats["median_rel_err"] < 0.02
    for shape, args in [
        (IterationShape((1000,), (0,)), (1000, 0, 0, 0)),
        (IterationShape((500,), (1500,), [800] * 10), (500, 10, 8000, 1500)),
        (IterationShape(decode_context_tokens=[2000] * 32), (0, 32, 64000, 0)),
    ]:
        assert m.iteration_s(shape) == pytest.approx(_truth(*args), rel=0.03)


def test_measured_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        write_profile(tmp_path / "x.json", [{"num_prefill_tokens": 1}], {"model": "m", "device": "d"})
    with pytest.raises(ValueError, match="device"):
        write_profile(tmp_path / "x.json", _rows(5), {"model": "m"})
    with pytest.raises(ValueError, match="non-negative"):
        write_profile(tmp_path / "x.json", [[1, 1, 0, 0, 0, -1.0]], {"model": "m", "device": "d"})
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other", "rows": []}))
    with pytest.raises(ValueError, match=PROFILE_FORMAT):
        MeasuredProfileModel.from_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="at least 3"):
        MeasuredProfileModel.fit(_rows(2))


# ----------------------------------------------------------------------------- all models


@pytest.fixture(scope="module")
def every_model(tmp_path_factory, vidur70b):
    path = write_profile(tmp_path_factory.mktemp("prof") / "p.json", _rows(), {"model": "m", "device": "d"})
    return {
        "linear": LinearLatencyModel(),
        "vidur": vidur70b,
        "vidur-scaled-h100": make_latency_model("vidur", model="meta-llama/Llama-2-7b-hf", gpu="h100", tensor_parallel=2, attention="scaled"),
        "splitwise": make_latency_model("splitwise"),
        "roofline": make_latency_model("roofline", model="meta-llama/Llama-2-70b-hf", gpu="a100", tensor_parallel=2),
        "measured": make_latency_model("measured", path=str(path)),
    }


@pytest.mark.parametrize("name", ["linear", "vidur", "vidur-scaled-h100", "splitwise", "roofline", "measured"])
def test_decode_run_equals_iteration_loop(every_model, name):
    m = every_model[name]
    rng = np.random.default_rng(7)
    for b in (1, 3, 32, 100):
        ctx = rng.integers(1, 3000, size=b)
        fast = m.decode_run_s(ctx, 200)
        slow = LatencyModel.decode_run_s(m, ctx, 200)
        assert fast.shape == (200,)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=0)
    assert m.decode_run_s(np.array([5]), 0).shape == (0,)
    with pytest.raises(ValueError):
        m.decode_run_s(np.array([5]), -1)


@pytest.mark.parametrize("name", ["linear", "vidur", "splitwise", "roofline", "measured"])
def test_models_are_pure_and_positive(every_model, name):
    m = every_model[name]
    s = IterationShape((512,), (0,), [300] * 4)
    assert m.iteration_s(s) == m.iteration_s(s) > 0
    assert m.iteration_s(IterationShape()) == 0.0


def test_registry_errors_list_valid_options():
    assert set(BUILTIN_LATENCY_MODELS) == {"linear", "vidur", "splitwise", "roofline", "measured"}
    with pytest.raises(ValueError, match="valid: \\['linear'"):
        make_latency_model("nope")
    with pytest.raises(ValueError, match="valid settings"):
        make_latency_model("linear", base=1)
    with pytest.raises(ValueError, match="needs \\['path'\\]"):
        make_latency_model("measured")
    assert isinstance(make_latency_model("linear", base_s=0.001), LinearLatencyModel)
