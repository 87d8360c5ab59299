"""The simulator's built-in latency models as a plugin (see docs/latency-models.md)."""

from __future__ import annotations

from controlplane import Plugin, hookimpl


class BuiltinLatencyModels(Plugin):
    """Latency models: linear, profile-fitted (Vidur, splitwise-sim), roofline, measured."""

    name = "builtin-latency-models"

    @hookimpl
    def cp_register_latency_models(self, register):
        from sim.latency.registry import BUILTIN_LATENCY_MODELS  # noqa: PLC0415 (scikit-learn loads lazily)

        for name, factory in BUILTIN_LATENCY_MODELS.items():
            register(name, factory)
