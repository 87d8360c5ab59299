"""GPUs and models of one's own (`cluster.gpus`, `cluster.model_specs`): a deployment's ``gpu`` and ``model_spec``
(and `roofline`'s ``gpu``) name them as they name the catalogue's, and the memory plan, the cold start, the roofline
and the cost use them. Before, ``gpu: l40s`` was 'unknown gpu' to roofline, a 13B model could not be named, and a
run of both unknown went with an unlimited KV cache and a flat 30 s cold start, silently."""

from __future__ import annotations

import re

import pytest

from controlplane.config import checked_config, load_config
from controlplane.errors import ConfigError
from controlplane.hardware.memory_plan import deployment_cold_start_s
from controlplane.testing import make_config, make_trace
from sim.replay import replay
from tests.controlplane.hardware.test_deployment_fit import _profile

L40S = {"memory_gib": 48, "fp16_tflops": 362, "memory_bandwidth_gb_s": 864, "interconnect_gb_s": 32,
        "price_per_hour": 1.8}
LLAMA_13B = {"num_layers": 40, "hidden_size": 5120, "num_heads": 40, "num_kv_heads": 40, "intermediate_size": 13824,
             "vocab_size": 32000}


def _cluster(*models, **more):
    return {"gpus": {"l40s": L40S}, "model_specs": {"acme/llama-13b": LLAMA_13B}, **more,
            **({"models": list(models)} if models else {})}


def test_an_own_gpu_and_model_are_planned_started_and_priced_as_the_catalogues():
    deployment = {"name": "m", "replicas": 1, "gpu": "l40s", "model_spec": "acme/llama-13b", "precision": "int8"}
    config = make_config(cluster=_cluster(deployment))
    d = config.cluster.models[0]
    assert deployment_cold_start_s(d) == pytest.approx(21.5077248)  # 15 s + 13 GB at 2 GB/s (was a flat 30 s)
    assert config.cluster.gpu_prices["l40s"] == 1.8
    summary = replay(make_trace(3), config, record=False).summary
    assert summary["gpu_seconds_by_gpu"] == {"l40s": summary["gpu_seconds"]}
    assert summary["cost_usd"] == pytest.approx(summary["gpu_seconds"] / 3600 * 1.8)
    from plugins.memory import StaticMemory

    assert StaticMemory().kv_blocks(d) == (2560, "2560 KV blocks (40960 tokens) from the memory plan: acme/llama-13b "
                                                 "int8 on 1x l40s, 11.82 GiB weights per GPU")
    assert checked_config(config).cluster.gpus["l40s"].memory_gib == 48  # (a dumped config reads the same)


def test_roofline_times_an_own_gpu():
    latency = {"gpu": "l40s", "model": "acme/llama-13b", "precision": "int8"}
    config = make_config(cluster=_cluster({"name": "m", "replicas": 1, "latency_model": "roofline",
                                           "latency": latency}))
    assert config.cluster.models[0].gpu == "l40s"  # (follows latency.gpu)
    assert replay(make_trace(3), config, record=False).summary["num_completed"] == 3  # was "unknown gpu 'l40s'"


def test_own_names_that_the_catalogue_has_or_given_twice_and_two_prices_are_refused():
    with pytest.raises(ConfigError, match=re.escape(
            "cluster.gpus: 'A100' is the catalogue's gpu a100-80gb: give your own gpu another name")):
        load_config(None, {"cluster": {"gpus": {"A100": L40S}}})
    with pytest.raises(ConfigError, match=re.escape("cluster.model_specs: 'llama2-7b' is the catalogue's model "
                                                    "meta-llama/Llama-2-7b-hf")):
        load_config(None, {"cluster": {"model_specs": {"llama2-7b": LLAMA_13B}}})
    with pytest.raises(ConfigError, match=re.escape("'l40s' and 'L40S' are one gpu (names match in any case)")):
        load_config(None, {"cluster": {"gpus": {"l40s": L40S, "L40S": L40S}}})
    with pytest.raises(ConfigError, match=re.escape("gpus.l40s.price_per_hour (1.8) and gpu_prices.l40s (2.0) price "
                                                    "one GPU: give one price")):
        load_config(None, {"cluster": {"gpus": {"l40s": L40S}, "gpu_prices": {"L40S": 2.0}}})
    with pytest.raises(ConfigError, match=r"cluster.model_specs.x: num_heads 40 is not divisible by num_kv_heads 7"):
        load_config(None, {"cluster": {"model_specs": {"x": {**LLAMA_13B, "num_kv_heads": 7}}}})
    with pytest.raises(ConfigError, match=re.escape(
            "cluster.models.0.model_spec: model_spec names a model, got its shape: describe it under "
            "cluster.model_specs.NAME")):
        load_config(None, {"cluster": {"models": [{"model_spec": LLAMA_13B}]}})


def test_a_config_knows_its_own_specs_alone():
    """Another config's own GPU (validated earlier in the process) is not this one's."""
    load_config(None, {"cluster": _cluster()})
    with pytest.raises(ConfigError, match=r"unknown model 'acme/llama-13b'.*describe one of your own under "
                                          r"cluster.model_specs.NAME"):
        load_config(None, {"cluster": {"models": [{"model_spec": "acme/llama-13b"}]}})


def test_an_unknown_model_is_warned_of_and_an_unused_load_bandwidth_refused(tmp_path):
    from sim.run_checks import checked_run_config

    path = _profile(tmp_path / "p.json", model="acme/llama-13b-int8", device="l40s")
    measured = {"name": "m", "latency_model": "measured", "latency": {"path": str(path)}}
    said: list[str] = []
    checked_run_config(load_config(None, {"cluster": {"models": [measured]}}), simulated=True, warn=said.append,
                       database=False)
    assert [s for s in said if "cluster.models.0:" in s] == [
        f"cluster.models.0: the measured profile {path}'s model (acme/llama-13b-int8) is not a model the catalogue "
        "knows and model_spec is not given, so the run goes with an unlimited KV cache (no request waits for memory "
        "or is preempted; give num_kv_blocks) and the default cold start, 30 s (give cold_start_s); or describe the "
        "model under cluster.model_specs.NAME (num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size, "
        "vocab_size) and give model_spec: NAME"]
    said.clear()
    given = load_config(None, {"cluster": _cluster({**measured, "model_spec": "acme/llama-13b", "gpu": "l40s"})})
    checked_run_config(given, simulated=True, warn=said.append, database=False)
    assert not [s for s in said if "cluster.models.0:" in s]
    with pytest.raises(ConfigError, match=re.escape(
            "load_bandwidth_gb_s (10) sizes the cold start from the model's weights, and this deployment names no "
            "model the catalogue knows (model_spec, latency.model), so its cold start would be the default 30 s")):
        load_config(None, {"cluster": {"models": [{**measured, "load_bandwidth_gb_s": 10}]}})
    fast = load_config(None, {"cluster": _cluster({**measured, "model_spec": "acme/llama-13b",
                                                   "load_bandwidth_gb_s": 10})}).cluster.models[0]
    assert deployment_cold_start_s(fast) == pytest.approx(17.60308992)  # (fp16, the profile's: 26 GB at 10 GB/s)
