"""The splitwise model never prices more tokens lower, past the profile included (its bundled profile is not
monotone: Llama-2-70B on A100 TP2 timed 32,768 prompt tokens at 0.79 s after 6.6 s for 16,384)."""

from __future__ import annotations

import warnings

import pytest

from sim.latency import IterationShape
from sim.latency.splitwise import SplitwiseModel, list_splitwise_profiles

TOKENS = [1, 2, 64, 127, 128, 200, 256, 300, 512, 1000, 1024, 2048, 4096, 8192, 12000, 16384, 24576, 32768,
          40960, 65536, 131072]


def test_long_prompts_never_get_cheaper_nor_free():
    m = SplitwiseModel("llama2-70b", "a100-80gb", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (prompts past the 4096-token context: tested below)
        ttft = [m.iteration_s(IterationShape((n,))) for n in (8192, 16384, 24576, 32768, 40960)]
    assert all(a < b for a, b in zip(ttft, ttft[1:])), ttft  # were 3.04, 6.47, 3.92, 1.07, 0.0 s
    # past the last rising knot (16,384) the curve keeps that segment's slope
    slope = (ttft[1] - m.iteration_s(IterationShape((8192,)))) / 8192
    assert ttft[4] == pytest.approx(ttft[1] + slope * (40960 - 16384))


@pytest.mark.parametrize("key", list_splitwise_profiles())
def test_every_bundled_profile_is_monotone_in_tokens_and_sequences(key):
    model, gpu, tp = key
    m = SplitwiseModel(model, gpu, tp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prefill = [m.iteration_s(IterationShape((n,))) for n in TOKENS]
        decode = [m.iteration_s(IterationShape(decode_context_tokens=[100] * n)) for n in TOKENS]
        mixed = [m.iteration_s(IterationShape((1,), (), [100] * (n - 1))) for n in TOKENS[1:]]
    for name, t in (("prefill", prefill), ("decode", decode)):
        assert all(0 < a <= b for a, b in zip(t, t[1:])), (name, t)
    assert all(x >= max(p, d) for x, p, d in zip(mixed, prefill[1:], decode[1:]))


def test_h100_decode_past_batch_256_is_not_cheaper():
    m = SplitwiseModel("llama2-70b", "h100-80gb", 2)
    step = [m.iteration_s(IterationShape(decode_context_tokens=[500] * b)) for b in (256, 512, 1024)]
    assert step[0] <= step[1] <= step[2], step  # 37.8 ms at 256, 37.1 ms at 512 before


def test_a_prompt_past_the_context_window_warns_once():
    m = SplitwiseModel("llama2-70b", "a100-80gb", 2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m.iteration_s(IterationShape((4096,)))
        assert not seen
        m.iteration_s(IterationShape((1000,), (3500,)))  # a chunk of a 4,500-token prompt
        m.iteration_s(IterationShape((5000,)))
    assert len(seen) == 1 and "4500-token prompt" in str(seen[0].message)
    assert "4096-token context window" in str(seen[0].message)
