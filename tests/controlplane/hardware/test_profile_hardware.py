"""A `measured` profile's ``device`` and ``tensor_parallel`` are the deployment's ``gpu`` and ``gpus_per_replica``,
as its ``precision`` is its ``precision``: followed where not given, refused naming both where they disagree. A run
on an L40S profile was stored and billed as an A100 (the field's default), and a TP2 profile billed one GPU a
replica."""

from __future__ import annotations

import re

import pytest

from controlplane.config import checked_config, load_config
from controlplane.errors import ConfigError
from controlplane.hardware.profile_hardware import gpu_of_device_name, profile_gpu
from tests.controlplane.hardware.test_deployment_fit import _deployment, _profile


def _measured(path):
    return {"latency_model": "measured", "latency": {"path": str(path)}}


def test_gpu_follows_the_profiles_device_and_a_disagreeing_gpu_is_refused(tmp_path):
    path = _profile(tmp_path / "l40s.json", device="l40s")
    d = _deployment(**_measured(path))
    assert d.gpu == "l40s" and "gpu" not in d.model_fields_set  # (was a100-80gb, priced $2.50/h)
    with pytest.raises(ConfigError, match=re.escape(
            f"the measured profile {path}'s device (l40s) and gpu (a100-80gb) disagree: the latency model times a "
            "replica on l40s GPUs, while its GPU-hours are priced, and its memory planned, as a100-80gb; give a "
            "profile timed on a100-80gb, or leave gpu out (it follows the profile's device)")):
        _deployment(**_measured(path), gpu="a100-80gb")
    assert _deployment(**_measured(path), gpu="L40S").gpu == "L40S"  # (one name in any case)
    a100 = _profile(tmp_path / "a100.json", device="a100")  # (the catalogue's alias)
    assert _deployment(**_measured(a100)).gpu == "a100-80gb"
    assert _deployment(**_measured(a100), gpu="a100-80gb").gpu == "a100-80gb"
    with pytest.raises(ConfigError, match=r"device \(a100\) and gpu \(l4\) disagree"):
        _deployment(**_measured(a100), gpu="l4")


def test_the_run_is_billed_on_the_profiles_gpu(tmp_path):
    from controlplane.testing import make_config, make_trace
    from sim.replay import replay

    path = _profile(tmp_path / "l40s.json", device="l40s", tensor_parallel=2)
    config = make_config(cluster={"gpu_prices": {"L40S": 1.8}, "models": [{"name": "m", "replicas": 1,
                                                                             **_measured(path)}]})
    summary = replay(make_trace(3), config, record=False).summary
    assert list(summary["gpu_seconds_by_gpu"]) == ["l40s"]
    assert summary["cost_usd"] == pytest.approx(summary["gpu_seconds"] / 3600 * 1.8)
    assert summary["gpu_seconds"] == pytest.approx(2 * summary["sim_end_s"], rel=0.05)  # two GPUs a replica


def test_gpus_per_replica_follows_the_profiles_tensor_parallel_and_a_disagreeing_one_is_refused(tmp_path):
    path = _profile(tmp_path / "tp2.json", device="a100-80gb", tensor_parallel=2)
    d = _deployment(**_measured(path))
    assert d.gpus_per_replica == 2 and "gpus_per_replica" not in d.model_fields_set
    assert checked_config(load_config(None, {"cluster": {"models": [{"name": "m", **_measured(path)}]}})).cluster.models[
        0].gpus_per_replica == 2  # (a dumped config reads the same)
    with pytest.raises(ConfigError, match=re.escape(
            f"the measured profile {path}'s tensor_parallel (2) and gpus_per_replica (1) disagree: the latency model "
            "times a replica on 2 GPUs, while its GPU-seconds, cost and memory plan count 1; give a profile timed on 1 "
            "GPUs a replica, or leave gpus_per_replica out (it follows the profile's tensor_parallel)")):
        _deployment(**_measured(path), gpus_per_replica=1)


def test_torch_devices_are_mapped_to_the_gpu_they_are_or_not_checked(tmp_path):
    """`controlplane profile` writes ``cpu`` / ``cuda:0`` and CUDA's device name: ``cpu`` is the catalogue's cpu, a
    CUDA device the GPU its name is (where known), anything else is not checked."""
    assert profile_gpu({"device": "cpu"}) == profile_gpu({"device": "cpu:0"}) == "cpu"
    assert profile_gpu({"device": "cuda:0", "device_name": "NVIDIA A100-SXM4-80GB"}) == "a100-80gb"
    assert profile_gpu({"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}) == "h100-80gb"
    assert profile_gpu({"device": "cuda:1", "device_name": "NVIDIA L4"}) == "l4"
    from controlplane.hardware.own_specs import validating

    with validating({}):  # (a config without GPUs of its own)
        assert gpu_of_device_name("NVIDIA L40S") is None  # (not the catalogue's l4)
        assert gpu_of_device_name("NVIDIA A100-SXM4-40GB") is None  # (not the catalogue's 80 GB one)
    with validating({"gpus": {"l40s": {"memory_gib": 48, "fp16_tflops": 362, "memory_bandwidth_gb_s": 864}}}):
        assert gpu_of_device_name("NVIDIA L40S") == "l40s"
    assert profile_gpu({"device": "cuda:0"}) is None and profile_gpu({"device": "unknown"}) is None
    assert profile_gpu({"device": "mps"}) is None
    cpu = _profile(tmp_path / "cpu.json")  # (device cpu)
    assert _deployment(**_measured(cpu)).gpu == "cpu"
    assert _deployment(**_measured(cpu), gpu="a100-80gb").gpu == "a100-80gb"  # (a CPU run standing for a GPU's)
    cuda = _profile(tmp_path / "cuda.json", device="cuda:0", device_name="NVIDIA H100 80GB HBM3")
    assert _deployment(**_measured(cuda)).gpu == "h100-80gb"
    with pytest.raises(ConfigError, match=r"device \(h100-80gb\) and gpu \(l4\) disagree"):
        _deployment(**_measured(cuda), gpu="l4")
    unnamed = _profile(tmp_path / "unnamed.json", device="cuda:0", device_name="Some Future GPU")
    assert _deployment(**_measured(unnamed), gpu="l4").gpu == "l4"  # (not checked)
    assert _deployment(**_measured(unnamed)).gpu == "a100-80gb"  # (the default, as before)
