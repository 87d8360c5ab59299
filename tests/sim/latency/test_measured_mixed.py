"""A mixed iteration of the measured model never costs less than its prefill alone or its decodes alone."""

from __future__ import annotations

from functools import lru_cache

import pytest

from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel


def _linear(tokens: int, prompts: int, decodes: int, context: int) -> float:
    return 0.02 + 0.0004 * tokens + 0.005 * prompts + 0.0005 * decodes + 1e-6 * context + (0.02 if prompts and decodes else 0)


def _rows() -> list[dict]:
    """An engine whose one-prompt prefills run 25% over the linear cost (four-prompt ones and mixed ones do not):
    the fit scales one-prompt prefills by a factor the mixed iterations do not get."""
    rows = []
    for n in (1, 2, 4, 8, 16) * 4:
        rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n,
                     "sum_decode_context": 100 * n, "sum_prefill_context": 0, "iteration_s": _linear(0, 0, n, 100 * n)})
    for tokens in (16, 64, 256) * 4:
        for prompts, slower in ((1, 1.25), (4, 1.0)):
            rows.append({"num_prefill_tokens": tokens, "num_prefill_seqs": prompts, "num_decode_seqs": 0,
                         "sum_decode_context": 0, "sum_prefill_context": 0,
                         "iteration_s": slower * _linear(tokens, prompts, 0, 0)})
        for decodes in (1, 4):
            rows.append({"num_prefill_tokens": tokens, "num_prefill_seqs": 1, "num_decode_seqs": decodes,
                         "sum_decode_context": 100 * decodes, "sum_prefill_context": 0,
                         "iteration_s": _linear(tokens, 1, decodes, 100 * decodes)})
    return rows


@lru_cache(maxsize=2)
def _model(padded: bool) -> MeasuredProfileModel:
    return MeasuredProfileModel.fit(_rows(), {"batching": "padded"} if padded else None)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("tokens", [64, 256, 512, 2048, 8192])
def test_adding_a_decode_to_a_prefill_never_makes_it_cheaper(padded, tokens):
    # past the grid a 2048-token prefill cost 2234.6 ms alone and 1898.8 ms with one decode added
    m = _model(padded)
    assert m.prefill_factors[1] > 1.05  # the one-prompt prefill's own factor
    alone = m.iteration_s(IterationShape((tokens,)))
    for decodes in (1, 4, 64):
        decode_alone = m.iteration_s(IterationShape(decode_context_tokens=[100] * decodes))
        mixed = m.iteration_s(IterationShape((tokens,), (), [100] * decodes))
        assert mixed >= max(alone, decode_alone), (tokens, decodes, mixed, alone, decode_alone)

