"""The registration hook of the built-in latency models."""

from __future__ import annotations

from sim.latency.plugin import BuiltinLatencyModels
from sim.latency.registry import BUILTIN_LATENCY_MODELS


def test_registers_every_builtin_latency_model():
    registered = {}
    BuiltinLatencyModels().cp_register_latency_models(register=registered.__setitem__)
    assert registered == BUILTIN_LATENCY_MODELS
    assert {"linear", "vidur", "splitwise", "roofline", "measured"} <= set(registered)
