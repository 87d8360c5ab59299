from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from sim.latency import IterationShape, LatencyModel
from sim.latency._interp import Curve1D
from sim.latency.vidur_profile import (
    LINEAR_OPS,
    PROFILES_DIR,
    ProfileNotFoundError,
    VidurProfileModel,
    fit_attention_surfaces,
    fit_op_curves,
    list_vidur_profiles,
)


def _holdout(df: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    levels = np.sort(df[key].unique())
    held = set(levels[1:-1:3])  # interior points only: interpolation, not extrapolation
    return df[~df[key].isin(held)], df[df[key].isin(held)]


@pytest.mark.parametrize("method", ["linear", "forest"])
@pytest.mark.parametrize(
    "gpu,model",
    [("a100", "meta-llama/Llama-2-70b-hf"), ("h100", "meta-llama/Llama-2-7b-hf"), ("a100", "meta-llama/Meta-Llama-3-8B"), ("h100", "Qwen/Qwen-72B")],
)
def test_linear_ops_reproduce_held_out_rows(gpu, model, method):
    df = pd.read_csv(PROFILES_DIR / f"vidur/compute/{gpu}/{model}/mlp.csv")
    for tp in sorted(df["num_tensor_parallel_workers"].unique()):
        train, test = _holdout(df[df["num_tensor_parallel_workers"] == tp], "num_tokens")
        curves = fit_op_curves(train, method=method)
        x = test["num_tokens"].to_numpy()
        pred = sum(curves[o](x) for o in LINEAR_OPS)
        true = sum(test[f"time_stats.{o}.median"].to_numpy() for o in LINEAR_OPS)
        rel = np.abs(pred / true - 1)
        assert np.median(rel) < 0.02, (tp, np.median(rel))
        assert np.percentile(rel, 90) < 0.07, (tp, np.percentile(rel, 90))
        for op in ("mlp_up_proj", "mlp_down_proj", "attn_pre_proj"):
            y = test[f"time_stats.{op}.median"].to_numpy()
            assert np.median(np.abs(curves[op](x) / y - 1)) < 0.03, (tp, op)


def test_attention_surfaces_reproduce_held_out_rows():
    df = pd.read_csv(PROFILES_DIR / "vidur/legacy_a100_2024-05/attention.csv").drop_duplicates()
    mask = np.random.default_rng(0).random(len(df)) < 0.2
    prefill, decode, _ = fit_attention_surfaces(df[~mask])
    test = df[mask]
    tp_, td = test[test["prefill_chunk_size"] > 0], test[test["prefill_chunk_size"] == 0]
    yp = tp_["time_stats.attn_prefill.median"].to_numpy()
    ep = np.abs(prefill(tp_["kv_cache_size"].to_numpy(), tp_["prefill_chunk_size"].to_numpy()) / yp - 1)
    yd = td["time_stats.attn_decode.median"].to_numpy()
    ed = np.abs(decode(td["batch_size"].to_numpy(), td["kv_cache_size"].to_numpy()) / yd - 1)
    assert np.median(ep) < 0.03 and np.median(ed) < 0.03
    # Kernels above timer granularity (~1 us steps) are reproduced tightly.
    assert np.percentile(ep[yp > 0.1], 90) < 0.10
    assert np.percentile(ed[yd > 0.05], 90) < 0.06


def test_all_reduce_curve_reproduces_held_out_sizes():
    df = pd.read_csv(PROFILES_DIR / "vidur/network/a100_pairwise_nvlink/all_reduce.csv")
    df = df[(df["num_workers"] == 2) & (df["devices_per_node"] == 2)].sort_values("size")
    x = df["size"].to_numpy() / 8192 / 2
    y = df["time_stats.all_reduce.median"].to_numpy()
    held = np.zeros(len(x), dtype=bool)
    held[1:-1:3] = True
    c = Curve1D.fit(x[~held], y[~held])
    rel = np.abs(c(x[held]) / y[held] - 1)
    big = x[held] >= 256
    assert np.median(rel[big]) < 0.02


def test_curve_extrapolates_linearly_and_clamps_low():
    c = Curve1D.fit(np.array([1, 2, 3, 4.0]), np.array([1, 2, 3, 4.0]))
    assert float(c(0.0)) == 1.0
    assert float(c(10.0)) == pytest.approx(10.0)


def test_forest_curve_matches_sklearn_random_forest():
    """The closed-form bagged-forest expectation tracks a real deep RandomForest."""
    from sklearn.ensemble import RandomForestRegressor

    df = pd.read_csv(PROFILES_DIR / "vidur/network/a100_pairwise_nvlink/all_reduce.csv")
    df = df[(df["num_workers"] == 2) & (df["devices_per_node"] == 2)]
    x = (df["size"] / 8192 / 2).to_numpy()
    y = df["time_stats.all_reduce.median"].to_numpy()
    q = np.array([8.0, 16, 24, 32, 64, 128, 1000, 4096])
    rf = RandomForestRegressor(n_estimators=250, max_depth=32, random_state=0, n_jobs=1).fit(x[:, None], y)
    ours = Curve1D.fit(x, y, "forest")(q)
    # a single 250-tree forest itself varies by up to ~8% between seeds on noisy small sizes
    np.testing.assert_allclose(ours, rf.predict(q[:, None]), rtol=0.1)


def test_anchor_prefill_matches_vidur_when_replica_idle(vidur70b, anchors_dir):
    """A request that arrives at an idle replica is prefilled alone: TTFT = one iteration."""
    for run in ("code_r1_n10000_qps0.8", "arxiv_r1_n10000_qps0.4"):
        w = pd.read_csv(anchors_dir / run / "workload.csv")
        r = pd.read_csv(anchors_dir / run / "vidur_request_metrics.csv")
        df = w.merge(r, on="request_id")
        idle = df[(df["scheduling_delay_s"] == 0) & (df["num_restarts"] == 0)]
        assert len(idle) >= 1
        pred = np.array([vidur70b.iteration_s(IterationShape((p,), (0,))) for p in idle["prompt_tokens"]])
        rel = np.abs(pred / idle["ttft_s"].to_numpy() - 1)
        assert np.median(rel) < 0.01, (run, np.median(rel))
        assert np.percentile(rel, 90) < 0.02


def test_anchor_decode_matches_vidur_for_isolated_requests(vidur70b, anchors_dir):
    """A request that overlapped nobody decoded at batch size 1 throughout."""
    w = pd.read_csv(anchors_dir / "code_r1_n10000_qps0.8" / "workload.csv")
    r = pd.read_csv(anchors_dir / "code_r1_n10000_qps0.8" / "vidur_request_metrics.csv")
    df = w.merge(r, on="request_id").sort_values("arrival_s").reset_index(drop=True)
    end = (df["arrival_s"] + df["e2e_s"]).to_numpy()
    start = df["arrival_s"].to_numpy()
    prev_end = np.concatenate([[-np.inf], np.maximum.accumulate(end)[:-1]])
    next_start = np.concatenate([start[1:], [np.inf]])
    iso = df[(prev_end < start) & (next_start > end) & (df["output_tokens"] > 1)]
    assert len(iso) > 50
    # Vidur's tpot = (e2e - ttft) / output_tokens; the first token comes with the prefill.
    pred = np.array([vidur70b.decode_run_s(np.array([p]), o - 1).sum() / o for p, o in zip(iso["prompt_tokens"], iso["output_tokens"])])
    rel = pred / iso["tpot_s"].to_numpy() - 1
    assert np.median(np.abs(rel)) < 0.01


def test_decode_run_equals_loop(vidur70b):
    rng = np.random.default_rng(1)
    for b in (1, 2, 32, 128, 150):
        ctx = rng.integers(1, 3900, size=b)
        fast = vidur70b.decode_run_s(ctx, 300)
        slow = LatencyModel.decode_run_s(vidur70b, ctx, 300)
        np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_breakdown_sums_to_iteration(vidur70b):
    s = IterationShape((700, 300), (0, 128), (900, 1500, 40))
    assert sum(vidur70b.breakdown_ms(s).values()) * 1e-3 == pytest.approx(vidur70b.iteration_s(s), rel=1e-9)


def test_vidur_arithmetic_details(vidur70b):
    m = vidur70b
    # token count rounds up to a multiple of 8 for the linear ops
    assert m._tokens_ms(9) == m._tokens_ms(16)
    # decode attention is keyed by mean KV rounded up to 64 (+1 for the token being decoded)
    a = m.iteration_s(IterationShape(decode_context_tokens=[64, 64]))
    b = m.iteration_s(IterationShape(decode_context_tokens=[100, 100]))
    assert a == b
    # several prefills are aggregated: sqrt of sum of squares, +10% batching overhead
    two = m.breakdown_ms(IterationShape((300, 400)))["attn_prefill"]
    one = m.breakdown_ms(IterationShape((500,)))["attn_prefill"]
    assert two == pytest.approx(one * 1.1)
    assert m.iteration_s(IterationShape()) == 0.0


def test_monotone_in_prompt_and_batch(vidur70b):
    t = [vidur70b.iteration_s(IterationShape((p,))) for p in (64, 512, 1024, 2048, 4096)]
    assert all(a < b for a, b in zip(t, t[1:]))
    d = [vidur70b.iteration_s(IterationShape(decode_context_tokens=[1000] * b)) for b in (1, 8, 32, 128)]
    assert all(a <= b for a, b in zip(d, d[1:]))


def test_beyond_profile_extrapolates(vidur70b):
    big = vidur70b.iteration_s(IterationShape((6000,)))
    assert big > vidur70b.iteration_s(IterationShape((4096,)))
    long = vidur70b.decode_run_s(np.array([8000, 9000]), 5)
    assert np.all(np.diff(long) >= 0) and np.all(long > 0)


def test_off_grid_terms_remembered_give_the_same_seconds_bit_for_bit(vidur70b):
    """Past the tabulated grid the model prices with numpy once per exact argument and remembers it."""
    from sim.latency import vidur_profile
    from sim.latency.vidur_profile import VidurProfileModel

    shapes = [IterationShape((6000,)), IterationShape((5000, 3000), (0, 512)), IterationShape((4500,), (),
                                                                                              [700] * 9)]
    first = [vidur70b.iteration_s(s) for s in shapes]
    assert len(vidur70b._beyond) > 0, "these shapes are off the grid"
    assert [vidur70b.iteration_s(s) for s in shapes] == first  # from what it remembers
    fresh = VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", 2, "a100_pairwise_nvlink")
    assert [fresh.iteration_s(s) for s in shapes] == first
    vidur70b._beyond.clear()
    assert [vidur70b.iteration_s(s) for s in shapes] == first
    assert vidur_profile._MAX_REMEMBERED >= 1024


def test_decode_past_the_grid_is_priced_from_rows_kept_per_batch_size(vidur70b, monkeypatch):
    """Past the tabulated grid (contexts over ``max_tokens``, batches over ``max_batch_size``) decode attention comes
    from a row per batch size of the fitted surface at every KV level, grown by doubling, instead of a numpy
    evaluation per decode run (~150 µs each: 28% of a profiled Mooncake replay). The same prices as the surface
    evaluated for those contexts alone (the profiled attention keeps Vidur's prices: not `monotone`), to float
    round-off (numpy's matrix product may round the last bit differently in arrays of other lengths), and every
    batch size's row is evaluated once per doubling (`test_vidur_monotone` checks the running maxima's rows)."""
    from sim.latency.vidur_tables import MonotoneGrid

    m = vidur70b
    assert not m.monotone
    g, top = m.granularity, m._n_kv_levels
    scale = m.layers * m.attn_scale.decode
    calls = []
    at = MonotoneGrid.at
    monkeypatch.setattr(MonotoneGrid, "at", lambda self, i, j: (calls.append(len(j)), at(self, i, j))[1])
    m._decode_rows_beyond.clear()
    rng = np.random.default_rng(3)
    for b in (1, 7, 128, m.max_batch_size + 22):
        for _ in range(50):
            start = int(rng.integers(0, 4 * top))
            kvq = (np.arange(int(rng.integers(1, 300))) + max(start, top if b <= m.max_batch_size else 0)) * g
            want = scale * m.decode_surface(np.full(kvq.shape, float(b)), kvq.astype(np.float64))
            np.testing.assert_allclose(m._decode_table(b, kvq), want, rtol=1e-12, atol=0)
    assert len(calls) <= 4 * 4  # (a few doublings per batch size, not one evaluation per run)
    assert m._decode_table(7, np.zeros(0, dtype=np.int64)).shape == (0,)
    # the whole-run and the per-iteration prices agree past the grid as on it
    ctx = np.array([9000, 12000, 15000])
    np.testing.assert_allclose(m.decode_run_s(ctx, 40), LatencyModel.decode_run_s(m, ctx, 40), rtol=1e-9)


def test_missing_profiles_raise_with_listing():
    with pytest.raises(ProfileNotFoundError, match="available compute profiles"):
        VidurProfileModel("meta-llama/Llama-2-7b-hf", "l4", 1)
    with pytest.raises(ProfileNotFoundError, match="attention='scaled'"):
        VidurProfileModel("meta-llama/Llama-2-7b-hf", "a100", 1)
    with pytest.raises(ProfileNotFoundError, match="tensor_parallel=2"):
        VidurProfileModel("microsoft/phi-2", "a100", 2, attention="scaled")
    with pytest.raises(ProfileNotFoundError, match="available"):
        VidurProfileModel(network="nvl72")
    with pytest.raises(ValueError, match="fp16"):
        VidurProfileModel(precision="int8")
    profiles = list_vidur_profiles()
    assert profiles[("a100", "meta-llama/Llama-2-70b-hf")] == [1, 2, 4, 8]


def test_scaled_attention_for_other_models_and_gpus():
    a = VidurProfileModel("meta-llama/Llama-2-7b-hf", "a100", 1, attention="scaled")
    h = VidurProfileModel("meta-llama/Llama-2-7b-hf", "h100", 1, attention="scaled")
    s = IterationShape((1000,), (0,), [1000] * 16)
    assert 0 < h.iteration_s(s) < a.iteration_s(s)
    np.testing.assert_allclose(h.decode_run_s(np.full(8, 500), 20), LatencyModel.decode_run_s(h, np.full(8, 500), 20), rtol=1e-9)


def test_cpu_overhead_option_adds_time():
    plain = VidurProfileModel("codellama/CodeLlama-34b-Instruct-hf", "a100", 2)
    cpu = VidurProfileModel("codellama/CodeLlama-34b-Instruct-hf", "a100", 2, cpu_overhead=True)
    s = IterationShape(decode_context_tokens=[500] * 16)
    assert cpu.iteration_s(s) > plain.iteration_s(s)
    np.testing.assert_allclose(cpu.decode_run_s(np.full(16, 500), 10), LatencyModel.decode_run_s(cpu, np.full(16, 500), 10), rtol=1e-9)


def test_profile_files_and_the_model_are_one_set_of_names():
    import sim.latency as latency
    from sim.latency import vidur_files, vidur_profile

    assert latency.ProfileNotFoundError is vidur_profile.ProfileNotFoundError is vidur_files.ProfileNotFoundError
    assert latency.list_vidur_profiles is vidur_profile.list_vidur_profiles is vidur_files.list_vidur_profiles
    assert latency.VidurProfileModel is vidur_profile.VidurProfileModel
    assert vidur_profile.PROFILES_DIR == vidur_files.PROFILES_DIR and vidur_profile.LINEAR_OPS == vidur_files.LINEAR_OPS


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("kv_cache_granularity", 0, "kv_cache_granularity must be a whole number of at least 1, got 0"),  # ZeroDivisionError
    ("model", 123, "model must be a name (a string), got 123"),  # AttributeError traceback
    ("nccl_launch_overhead_ms", -5, "nccl_launch_overhead_ms must be a finite non-negative number, got -5"),
    ("nccl_launch_overhead_ms", -0.05, "nccl_launch_overhead_ms must be a finite non-negative number"),  # accepted
    ("attention_batching_overhead", -1, "attention_batching_overhead must be a finite non-negative number"),
    ("max_tokens", 0, "max_tokens must be a whole number of at least 1, got 0"),  # accepted with no effect
    ("max_batch_size", 0, "max_batch_size must be a whole number of at least 1"),
    ("block_size", 1.5, "block_size must be a whole number of at least 1, got 1.5"),
    ("nccl_skew_overhead_per_device_ms", None, "nccl_skew_overhead_per_device_ms must be a number, got None"),
])
def test_vidur_settings_are_checked_at_load_naming_the_setting(setting, value, message):
    from sim.latency.registry import make_latency_model

    with pytest.raises(ValueError, match=re.escape(message)):
        make_latency_model("vidur", **{setting: value})


def test_a_profiles_dir_one_level_too_deep_says_the_expected_layout(tmp_path):
    """It said "no Vidur compute profile ... available compute profiles:" and an empty list."""
    from sim.latency.registry import make_latency_model

    (tmp_path / "vidur" / "compute").mkdir(parents=True)
    deep = tmp_path / "vidur"
    with pytest.raises(ValueError, match=re.escape(f"profiles_dir '{deep}' has no vidur/compute/ folder")) as exc:
        make_latency_model("vidur", profiles_dir=str(deep))
    assert "vidur/compute/GPU/ORG/MODEL/mlp.csv" in str(exc.value) and f"give its parent, '{tmp_path}'" in str(exc.value)
    with pytest.raises(ValueError, match="is not a directory"):
        make_latency_model("vidur", profiles_dir=str(tmp_path / "nope"))


def test_a_model_that_is_not_a_name_is_named_by_a_replay_too(tmp_path):
    """The replay looked the model up in the catalogue (for cold starts) before the latency model checked it: a
    traceback ("'int' object has no attribute 'lower'")."""
    from controlplane.testing import replay_with
    from controlplane.errors import ControlPlaneError

    cluster = {"models": [{"name": "m", "latency_model": "vidur", "latency": {"model": 123}}]}
    with pytest.raises(ControlPlaneError, match=r"cluster.models\[m\].latency: model must be a name \(a string\), got 123"):
        replay_with(cluster=cluster)


def test_the_model_knows_its_context_window():
    from sim.latency.vidur_profile import VidurProfileModel

    assert VidurProfileModel("meta-llama/Meta-Llama-3-8B", "a100", 1, attention="scaled").max_context == 8192
