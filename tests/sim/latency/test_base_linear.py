from __future__ import annotations

import numpy as np
import pytest

from sim.latency import IterationShape, LatencyModel, LinearLatencyModel


def test_shape_defaults_and_counts():
    s = IterationShape()
    assert s.is_empty and s.num_tokens == 0
    s = IterationShape((100, 20), (0, 5), (10, 20, 30))
    assert s.num_prefill_tokens == 120 and s.num_decode_seqs == 3 and s.num_tokens == 123
    with pytest.raises(Exception):
        s.prefill_chunk_tokens = ()  # frozen


def test_linear_empty_is_free_and_terms_add_up():
    m = LinearLatencyModel(base_s=0.005, prefill_s_per_token=1e-4, decode_s_per_seq=5e-5, decode_s_per_context_token=3e-7)
    assert m.iteration_s(IterationShape()) == 0.0
    t = m.iteration_s(IterationShape((100,), (0,), (10, 20)))
    assert t == pytest.approx(0.005 + 100 * 1e-4 + 2 * 5e-5 + 30 * 3e-7)


def test_linear_defaults_resemble_7b_a100():
    m = LinearLatencyModel()
    decode = m.iteration_s(IterationShape(decode_context_tokens=[500] * 8))
    prefill = m.iteration_s(IterationShape((2048,)))
    assert 0.004 < decode < 0.02
    assert 0.1 < prefill < 0.5


def test_linear_rejects_bad_coefficients():
    with pytest.raises(ValueError):
        LinearLatencyModel(base_s=-1)
    with pytest.raises(ValueError):
        LinearLatencyModel(decode_s_per_seq=float("nan"))


def test_base_loop_matches_vectorised():
    m = LinearLatencyModel()
    ctx = np.array([5, 100, 2000])
    np.testing.assert_allclose(m.decode_run_s(ctx, 50), LatencyModel.decode_run_s(m, ctx, 50), rtol=1e-12)
    assert m.decode_run_s(ctx, 0).shape == (0,)
    assert np.all(m.decode_run_s(np.array([], dtype=int), 3) == 0)


def test_mismatched_prefill_context_rejected():
    m = LinearLatencyModel(prefill_s_per_token_context=1e-9)
    with pytest.raises(ValueError):
        m.iteration_s(IterationShape((10, 20), (1,)))


def test_linear_settings_written_as_strings_or_null_name_the_setting():
    """YAML reads `2e-4` as a string: it said "ufunc 'isfinite' not supported for the input types"."""
    from sim.latency import make_latency_model

    m = make_latency_model("linear", base_s=0.01, prefill_s_per_token="2e-4")
    assert m.iteration_s(IterationShape((10,), (0,))) == pytest.approx(0.01 + 10 * 2e-4)
    for key, value in (("base_s", None), ("base_s", "fast"), ("decode_s_per_seq", True), ("base_s", [1])):
        with pytest.raises(ValueError, match=f"^{key} must be a number, got {value!r}".replace("[", r"\[")):
            make_latency_model("linear", **{key: value})
    with pytest.raises(ValueError, match="base_s must be a finite non-negative number, got '-1e-3'"):
        make_latency_model("linear", base_s="-1e-3")
