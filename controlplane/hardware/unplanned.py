"""What a deployment runs on when its model is unknown: an unlimited KV cache (no ``num_kv_blocks``) and the
default cold start (no ``cold_start_s``), both sized from a model's shape that it lacks. A run's start warns of it
once per deployment naming the model (`unknown_model_warning`), and a ``load_bandwidth_gb_s`` that could size
nothing is refused when the config loads (`unused_load_bandwidth`).
"""

from __future__ import annotations

from typing import Any

from controlplane.hardware.memory_plan import DEFAULT_COLD_START_S, known_model

__all__ = ["named_model", "unknown_model_warning", "unused_load_bandwidth"]

#: How to give a deployment a model the catalogue lacks.
DESCRIBE_MODEL = ("describe the model under cluster.model_specs.NAME (num_layers, hidden_size, num_heads, "
                  "num_kv_heads, intermediate_size, vocab_size) and give model_spec: NAME")


def named_model(deployment: Any) -> tuple[str, str] | None:
    """(the model a deployment's latency model times, where it is named) when the deployment has no model of the
    catalogue (`known_model`: ``model_spec``, else ``latency.model``): its ``latency.model``, or a `measured`
    profile's ``model`` (which the catalogue may know: a profile's model is its label, not read as the
    deployment's ``model_spec``); None where it names none (the ``linear`` model's toy iterations are of no model)
    or the deployment's model is one the catalogue knows."""
    try:
        if known_model(deployment) is not None:
            return None
    except KeyError:
        return None
    latency = deployment.latency if isinstance(deployment.latency, dict) else {}
    if isinstance(latency.get("model"), str):
        return latency["model"], "latency.model"
    if deployment.latency_model == "measured":
        from controlplane.hardware.profile_hardware import profile_meta

        model = (profile_meta(latency.get("path")) or {}).get("model")
        if isinstance(model, str) and model:
            return model, f"the measured profile {latency.get('path')}'s model"
    return None


def unknown_model_warning(deployment: Any, key: str) -> str | None:
    """The warning of a deployment (``key``: ``cluster.models.0``) whose model the catalogue lacks (`named_model`),
    run with an unlimited KV cache and/or the default cold start; None where it gives both or names no model."""
    named = named_model(deployment)
    if named is None or (deployment.num_kv_blocks and deployment.cold_start_s is not None):
        return None
    model, whose = named
    runs = []
    catalogued = _catalogue_model(model)
    if not deployment.num_kv_blocks:
        runs.append("an unlimited KV cache (no request waits for memory or is preempted; give num_kv_blocks)")
    if deployment.cold_start_s is None:
        runs.append(f"the default cold start, {DEFAULT_COLD_START_S:g} s (give cold_start_s)")
    if catalogued is not None:  # (a profile's model: the catalogue knows it, but model_spec is what sizes a replica)
        return (f"{key}: model_spec is not given, so the run goes with {' and '.join(runs)}: {whose} ({model}) "
                f"is a model the catalogue knows, but the memory plan and cold start size the model_spec's; or give "
                f"model_spec: {catalogued} to size them from its weights")
    return (f"{key}: {whose} ({model}) is not a model the catalogue knows and model_spec is not given, so the run "
            f"goes with {' and '.join(runs)}; or {DESCRIBE_MODEL}")


def _catalogue_model(name: str) -> str | None:
    """The catalogue's name of model ``name`` (an alias's: ``llama2-7b`` is ``meta-llama/Llama-2-7b-hf``), else
    None."""
    from controlplane.hardware.specs import get_model

    try:
        return get_model(name).name
    except KeyError:
        return None


def unused_load_bandwidth(deployment: Any) -> str | None:
    """Why a ``load_bandwidth_gb_s`` given other than its default sizes nothing: the cold start is ``cold_start_s``
    where that is given, else the weights' over it, which a model the catalogue lacks has none of (the default
    30 s); None where it is used (or not given)."""
    default = type(deployment).model_fields["load_bandwidth_gb_s"].default
    if ("load_bandwidth_gb_s" not in deployment.model_fields_set or deployment.load_bandwidth_gb_s == default
            or deployment.cold_start_s is not None):
        return None
    try:
        if known_model(deployment) is not None:
            return None
    except KeyError:
        return None
    return (f"load_bandwidth_gb_s ({deployment.load_bandwidth_gb_s:g}) sizes the cold start from the model's weights, "
            f"and this deployment names no model the catalogue knows (model_spec, latency.model), so its cold start "
            f"would be the default {DEFAULT_COLD_START_S:g} s whatever the bandwidth; give cold_start_s (seconds from "
            f"scale-up to ready), or {DESCRIBE_MODEL}")
