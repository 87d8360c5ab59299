"""The simulator's iteration estimate (`sim.latency.estimate.iteration_estimator`), the one planners ask."""

from __future__ import annotations

import functools

import pytest

from controlplane.scaling import takes_prefill_context
from sim.latency.base import IterationShape
from sim.latency.estimate import iteration_estimator
from sim.latency.linear import LinearLatencyModel


def test_the_estimate_prices_a_chunks_context_and_is_unchanged_without_it():
    model = LinearLatencyModel(prefill_s_per_token_context=1e-8)
    est = iteration_estimator({"m": model})
    assert takes_prefill_context(functools.partial(est, "m"))  # as the control loop binds it to a model
    for args in ((512, 4, 2000), (0, 8, 100), (300, 0, 0)):
        shape = IterationShape(prefill_chunk_tokens=(args[0],) if args[0] else (),
                               prefill_context_tokens=(0,) if args[0] else (),
                               decode_context_tokens=(args[2],) * args[1])
        assert est("m", *args) == est("m", *args, 0) == model.iteration_s(shape)
    # chunk 512 at context 10,000: the linear model's chunk x context attention term
    assert est("m", 512, 4, 2000, 10_000) - est("m", 512, 4, 2000) == pytest.approx(512 * 10_000 * 1e-8)
    assert est("m", 0, 4, 2000, 10_000) == est("m", 0, 4, 2000)  # no chunk: the context prices nothing
    assert est("m", 0, 0, 0) == 0.0


def test_an_unknown_model_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="other"):
        iteration_estimator({"m": LinearLatencyModel()})("other", 1, 1, 1)
