"""The Vidur model with ``monotone=True`` never prices more tokens, more sequences or longer contexts lower, on its
tables and past them (its profiles are noisy: the A100 reference attention profile times 22 decoding sequences faster
than 18); by default it keeps the profiles' measured prices, as Vidur's simulator does."""

from __future__ import annotations

import numpy as np
import pytest

from sim.latency import IterationShape
from sim.latency.vidur_profile import VidurProfileModel

CONFIGS = {
    "70b-a100-profile": ("meta-llama/Llama-2-70b-hf", "a100", 2, "profile"),  # with monotone=True
    "7b-a100-scaled": ("meta-llama/Llama-2-7b-hf", "a100", 1, "scaled"),
    "7b-h100-scaled": ("meta-llama/Llama-2-7b-hf", "h100", 1, "scaled"),
    "llama3-8b-a100-scaled": ("meta-llama/Meta-Llama-3-8B", "a100", 1, "scaled"),
}
CHUNKS = [1, 2, 7, 8, 9, 16, 33, 64, 65, 96, 100, 112, 127, 128, 200, 256, 300, 511, 512, 1000, 1023, 1024, 2048,
          4095, 4096, 4097, 6000, 9000]
CONTEXTS = [0, 1, 64, 100, 512, 1000, 2048, 4031, 4096, 4097, 5000, 8192, 20000]
BATCHES = [1, 2, 3, 7, 8, 9, 16, 17, 18, 19, 21, 22, 24, 31, 32, 64, 100, 127, 128, 129, 150, 300]


def _model(name: str) -> VidurProfileModel:
    model, gpu, tp, attention = CONFIGS[name]
    return VidurProfileModel(model, gpu, tp, attention=attention, monotone=True)


def _nondecreasing(values: list[float]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:]))


def test_more_decoding_sequences_never_cost_less_as_reported():
    m = _model("7b-a100-scaled")
    d18, d22 = (m.iteration_s(IterationShape(decode_context_tokens=[1000] * b)) for b in (18, 22))
    assert d22 >= d18  # 20.29 ms at 22 sequences, 24.51 ms at 18 before
    h = _model("7b-h100-scaled")
    assert h.iteration_s(IterationShape((112,))) >= h.iteration_s(IterationShape((100,)))  # 11% cheaper before


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_is_monotone_in_tokens_and_context(name):
    m = _model(name)
    for ctx in (0, 100, 4096, 9000):
        t = [m.iteration_s(IterationShape((c,), (ctx,))) for c in CHUNKS]
        assert _nondecreasing(t), (ctx, t)
    for c in (1, 128, 1024, 5000):
        t = [m.iteration_s(IterationShape((c,), (ctx,))) for ctx in CONTEXTS]
        assert _nondecreasing(t), (c, t)


@pytest.mark.parametrize("name", CONFIGS)
def test_decode_is_monotone_in_sequences_and_context(name):
    m = _model(name)
    for ctx in (10, 1000, 4000, 5000, 20000):
        t = [m.iteration_s(IterationShape(decode_context_tokens=[ctx] * b)) for b in BATCHES]
        assert _nondecreasing(t), (ctx, t)
    for b in (1, 8, 22, 128, 150):
        t = [m.iteration_s(IterationShape(decode_context_tokens=[ctx] * b)) for ctx in CONTEXTS]
        assert _nondecreasing(t), (b, t)
        run = m.decode_run_s(np.full(b, 3900), 400)  # across the table's edge, one token a step
        assert np.all(np.diff(run) >= 0)


def test_rows_past_the_grid_are_running_maxima_of_the_surface():
    m = _model("llama3-8b-a100-scaled")
    g, top = m.granularity, m._n_kv_levels
    scale = m.layers * m.attn_scale.decode
    rng = np.random.default_rng(3)
    for b in (1, 7, 18, 22, 128, m.max_batch_size + 22):
        for _ in range(20):
            start = int(rng.integers(0, 4 * top))
            kvq = (np.arange(int(rng.integers(1, 300))) + max(start, top if b <= m.max_batch_size else 1)) * g
            raw = scale * m.decode_surface(np.full(kvq.shape, float(b)), kvq.astype(np.float64))
            got = m._decode_table(b, kvq)
            assert np.all(got >= raw * (1 - 1e-12)) and np.all(np.diff(got) >= 0)


def test_the_measured_prices_are_kept_unless_asked():
    plain = VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", 2)
    assert not plain.monotone and _model("7b-a100-scaled").monotone
    assert not VidurProfileModel("meta-llama/Llama-2-7b-hf", "a100", 1, attention="scaled").monotone
    assert not VidurProfileModel("meta-llama/Llama-2-7b-hf", "a100", 1, attention="scaled", monotone=None).monotone
    dip = [plain.iteration_s(IterationShape((n,))) for n in (8, 9)]  # Vidur's linear layers: 9 tokens cost less
    assert dip[1] < dip[0]
    with pytest.raises(ValueError, match="monotone must be true, false or null"):
        VidurProfileModel("meta-llama/Llama-2-70b-hf", "a100", 2, monotone="yes")


def test_a_prompt_of_millions_of_tokens_is_priced_without_a_table_as_long_as_it():
    """A trace row of 200M prompt tokens (a request refused anyway) made the SLO planner's price of it tabulate the
    linear ops every 8 tokens up to its length: 22 GB, and the replay was killed."""
    from sim.latency import vidur_profile

    m = _model("llama3-8b-a100-scaled")
    cap = m._n_lin + 8 * vidur_profile._LIN_PAST_MAX
    near = m._tokens_ms(cap - 8)  # the last count tabulated
    far = [m._tokens_ms(n) for n in (cap, cap + 8, 5_000_000, 200_000_000, 2_147_483_647)]
    assert len(m._lin_past) == vidur_profile._LIN_PAST_MAX
    assert _nondecreasing([near, *far]) and far[-1] > far[0]
    # past the table: the curve at that count, at least the tabulated maximum (what the running maximum gives
    # when the curve rises there, as it does)
    at = float(m._linear_ms(np.array([200_000_000.0]))[0])
    kv = m._tokens_ms(200_000_000) - max(at, float(m._lin_past[-1]))
    assert kv >= 0 and far[3] == pytest.approx(max(at, float(m._lin_past[-1])) + kv)
