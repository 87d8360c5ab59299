"""A deployment's latency ``tensor_parallel`` and ``gpus_per_replica`` are one number, and a known model's weights
fit its replica's GPUs: checked when the config loads (`controlplane.hardware.deployment_fit`)."""

from __future__ import annotations

import re

import pytest

from controlplane.config import checked_config, load_config
from controlplane.errors import ConfigError


def _deployment(**keys):
    return load_config(None, {"cluster": {"models": [{"name": "m", **keys}]}}).cluster.models[0]


VIDUR_7B = {"latency_model": "vidur", "latency": {"model": "meta-llama/Llama-2-7b-hf", "gpu": "a100",
                                                  "attention": "scaled", "tensor_parallel": 2}}


def test_gpus_per_replica_follows_the_latency_models_tensor_parallel_when_not_given():
    d = _deployment(**VIDUR_7B)
    assert d.gpus_per_replica == 2  # billed and memory-planned as the 2-GPU replica it is timed as
    config = load_config(None, {"cluster": {"models": [{"name": "m", **VIDUR_7B}]}})
    assert checked_config(config).cluster.models[0].gpus_per_replica == 2  # (a dumped config reads the same)
    assert _deployment(gpus_per_replica=4).gpus_per_replica == 4
    assert _deployment().gpus_per_replica == 1


def test_a_latency_tensor_parallel_other_than_gpus_per_replica_is_an_error_naming_both():
    with pytest.raises(ConfigError) as exc:
        _deployment(**VIDUR_7B, gpus_per_replica=1)
    assert str(exc.value) == (
        "invalid configuration:\n  cluster.models.0: latency.tensor_parallel (2) and gpus_per_replica (1) disagree: "
        "the latency model times a replica on 2 GPUs, while its GPU-seconds, cost and memory plan count 1; give the "
        "replica's GPU count once, as latency.tensor_parallel (gpus_per_replica follows it), or the same number in "
        "both (given as an option or override)")
    config = load_config(None, {"cluster": {"models": [{"name": "m", **VIDUR_7B}]}})
    config.cluster.models[0].gpus_per_replica = 4  # (changed in code after the config was made)
    with pytest.raises(ConfigError, match=r"latency.tensor_parallel \(2\) and gpus_per_replica \(4\) disagree"):
        checked_config(config)


def test_a_model_whose_weights_exceed_its_gpus_is_an_error_with_the_ways_out(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("cluster:\n  models:\n    - {name: default, replicas: 1, latency_model: roofline, latency: "
                    "{model: meta-llama/Llama-2-70b-hf, gpu: l4, tensor_parallel: 2}, gpu: l4, gpus_per_replica: 2}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"invalid configuration in {path}:\n  cluster.models.0: meta-llama/Llama-2-70b-hf does not fit: its weights "
        "in fp16 take 63.8 GiB per GPU over 2 GPUs (gpus_per_replica: 2), more than one l4 holds (24.0 GiB; gpu: "
        "l4); give more gpus_per_replica (the latency model's tensor_parallel with it), a GPU with more memory, or a "
        "lower precision (int8, nf4)")
    # each way out fits
    assert _deployment(model_spec="meta-llama/Llama-2-70b-hf", gpu="l4", gpus_per_replica=8)
    assert _deployment(model_spec="meta-llama/Llama-2-70b-hf", gpu="h200", gpus_per_replica=1)
    assert _deployment(model_spec="meta-llama/Llama-2-70b-hf", gpu="a100-80gb", precision="nf4")
    with pytest.raises(ConfigError, match="meta-llama/Llama-2-70b-hf does not fit: .* over 1 GPU "):
        _deployment(model_spec="meta-llama/Llama-2-70b-hf")  # (on one a100-80gb: 127.5 GiB)


def test_gpus_per_replica_that_cannot_shard_the_model_is_an_error():
    with pytest.raises(ConfigError, match=r"gpus_per_replica \(3\) does not divide meta-llama/Llama-2-7b-hf's 32 "
                                          r"attention heads and hidden size 4096, .*; give one of 1, 2, 4, 8, 16, 32"):
        _deployment(model_spec="meta-llama/Llama-2-7b-hf", gpus_per_replica=3)


def test_what_the_catalogue_lacks_is_not_checked():
    assert _deployment(latency={"model": "my-own-model"}, gpus_per_replica=3)  # (its latency model's to judge)
    assert _deployment(model_spec="meta-llama/Llama-2-70b-hf", gpu="mi300x")  # (an unknown GPU: no memory known)
    assert _deployment(model_spec="meta-llama/Llama-2-70b-hf", gpus_per_replica=2, precision="auto")
    assert _deployment(latency={"tensor_parallel": "2"}).gpus_per_replica == 1  # (the latency model refuses it)


def test_precision_auto_is_sized_as_the_worker_picks_it():
    """``precision: auto`` (the live worker's choice) failed the simulator's start with 'unknown precision auto'
    and left the memory plan out: it is 2 bytes a weight on a GPU, fp32 on ``gpu: cpu``, as the worker picks."""
    from controlplane.hardware.memory_plan import planned_precision
    from controlplane.testing import make_config, make_trace, replay_with

    model = {"name": "default", "replicas": 1, "latency_model": "vidur",
             "latency": {"model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100", "tensor_parallel": 1,
                         "attention": "scaled"}, "gpu": "a100-80gb"}
    auto = make_config(cluster={"models": [{**model, "precision": "auto"}]})
    fp16 = make_config(cluster={"models": [{**model, "precision": "fp16"}]})
    assert planned_precision(auto.cluster.models[0]) == "fp16"
    assert planned_precision(make_config(cluster={"models": [{"name": "c", "gpu": "cpu", "precision": "auto"}]})
                             .cluster.models[0]) == "fp32"
    runs = [replay_with(trace=make_trace(20), config=c) for c in (auto, fp16)]
    plans = [[d.reason for d in r.decisions if d.action == "memory_plan"][0] for r in runs]
    assert plans[0] == plans[1] and "KV blocks" in plans[0] and "unlimited" not in plans[0]


ROOFLINE_7B = {"latency_model": "roofline", "latency": {"model": "meta-llama/Llama-2-7b-hf"}}


def test_a_latency_gpu_other_than_the_deployments_gpu_is_an_error_naming_both():
    """A replica billed as an L4 but timed as an H100 ran silently (a search recommended 3 x l4 at the L4 price at
    H100 speed): the latency model's GPU and the deployment's are one GPU, as its tensor_parallel and gpus_per_replica."""
    with pytest.raises(ConfigError) as exc:
        _deployment(latency_model="roofline", latency={"model": "meta-llama/Llama-2-7b-hf", "gpu": "h100-80gb"},
                    gpu="l4")
    assert str(exc.value) == (
        "invalid configuration:\n  cluster.models.0: latency.gpu (h100-80gb) and gpu (l4) disagree: the latency model "
        "times a replica on h100-80gb GPUs, while its GPU-hours are priced, and its memory planned, as l4; give the GPU "
        "once, as latency.gpu (gpu follows it), or the same GPU in both (given as an option or override)")
    # given alone, the deployment's GPU follows it (by its catalogue name); the catalogue's aliases are the same GPU
    assert _deployment(latency_model="roofline", latency={"model": "meta-llama/Llama-2-7b-hf", "gpu": "h100"}
                       ).gpu == "h100-80gb"
    assert _deployment(**VIDUR_7B, gpu="a100-80gb").gpu == "a100-80gb"  # (vidur's "a100": the bundled configs' pair)
    with pytest.raises(ConfigError, match=r"latency.gpu \(a100\) and gpu \(a100-40gb\) disagree"):
        _deployment(**VIDUR_7B, gpu="a100-40gb")  # (a GPU the catalogue lacks is not the latency model's)
    assert _deployment(latency={"gpu": "h100-80gb-pcap"}, gpu="h100-80gb")  # (a profile's own name: its model's)


def test_a_latency_precision_other_than_the_deployments_precision_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=re.escape(
            "latency.precision (int8) and precision (fp16) disagree: the latency model times a replica's weights in "
            "int8, while its memory plan and cold start size them in fp16; give the precision once, as "
            "latency.precision (precision follows it), or the same in both")):
        _deployment(latency_model="roofline", latency={"model": "meta-llama/Llama-2-7b-hf", "precision": "int8"},
                    precision="fp16")
    assert _deployment(latency_model="roofline", latency={"model": "meta-llama/Llama-2-7b-hf", "precision": "int8"}
                       ).precision == "int8"
    assert _deployment(latency={"precision": "bf16"}, precision="fp16")  # (the same size and speed)
    assert _deployment(latency={"precision": "int8"}, precision="auto")  # (the live worker's choice)


def test_a_latency_models_default_gpu_or_precision_other_than_the_deployments_is_refused_at_the_start():
    """``gpu: h100-80gb`` with a roofline model not given ``latency.gpu`` was timed on its default A100."""
    from controlplane.testing import make_config, make_trace
    from sim.replay import replay

    for keys, words in (({"gpu": "h100-80gb"}, "the default gpu of latency model 'roofline' (a100-80gb) and gpu "
                                                "(h100-80gb) disagree"),
                        ({"precision": "int8"}, "the default precision of latency model 'roofline' (fp16) and "
                                                "precision (int8) disagree")):
        config = make_config(cluster={"models": [{"name": "default", **ROOFLINE_7B, **keys}]})
        with pytest.raises(ConfigError, match=re.escape(f"cluster.models[default]: {words}")):
            replay(make_trace(2), config, record=False)
    config = make_config(cluster={"models": [{"name": "default", **ROOFLINE_7B, "precision": "bf16"}]})
    assert replay(make_trace(2), config, record=False).summary["num_completed"] == 2


def test_a_model_spec_other_than_the_model_timed_is_an_error_naming_both():
    """``model_spec`` 7B with ``latency.model`` 70B ran silently: 70B timings, 7B memory plan and cold start."""
    with pytest.raises(ConfigError) as exc:
        _deployment(latency_model="roofline", latency={"model": "meta-llama/Llama-2-70b-hf", "tensor_parallel": 2},
                    model_spec="meta-llama/Llama-2-7b-hf")
    assert str(exc.value) == (
        "invalid configuration:\n  cluster.models.0: latency.model (meta-llama/Llama-2-70b-hf) and model_spec "
        "(meta-llama/Llama-2-7b-hf) disagree: the latency model times meta-llama/Llama-2-70b-hf's iterations, while "
        "the memory plan and cold start size meta-llama/Llama-2-7b-hf's weights and KV cache; give the model once, as "
        "latency.model (model_spec follows it), or the same model in both (given as an option or override)")
    # one model under two names (an alias, a chat model's base), or a name only the latency model knows: no error
    assert _deployment(latency={"model": "llama2-7b"}, model_spec="meta-llama/Llama-2-7b-chat-hf")
    assert _deployment(latency={"model": "someone/profiled-model"}, model_spec="meta-llama/Llama-2-7b-hf")


def test_a_latency_models_default_model_other_than_model_spec_is_refused_at_the_start():
    """``model_spec`` alone (70B) with a roofline model not given ``latency.model`` was timed as its default 7B."""
    from controlplane.testing import make_config, make_trace
    from sim.replay import replay

    deployment = {"name": "default", "latency_model": "roofline", "gpus_per_replica": 2,
                  "latency": {"tensor_parallel": 2}}
    config = make_config(cluster={"models": [{**deployment, "model_spec": "meta-llama/Llama-2-70b-hf"}]})
    with pytest.raises(ConfigError, match=re.escape(
            "cluster.models[default]: the default model of latency model 'roofline' (meta-llama/Llama-2-7b-hf) and "
            "model_spec (meta-llama/Llama-2-70b-hf) disagree")):
        replay(make_trace(2), config, record=False)
    config = make_config(cluster={"models": [{**deployment, "model_spec": "meta-llama/Llama-2-7b-hf"}]})
    assert replay(make_trace(2), config, record=False).summary["num_completed"] == 2


def _profile(path, **meta):
    from controlplane.hardware.profile_format import write_profile

    rows = [{"num_prefill_tokens": p, "num_prefill_seqs": 1, "num_decode_seqs": 0, "sum_decode_context": 0,
             "sum_prefill_context": 0, "iteration_s": 0.001 * p} for p in (16, 64)]
    rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": 2, "sum_decode_context": 40,
                 "sum_prefill_context": 0, "iteration_s": 0.004})
    return write_profile(path, rows, {"model": "tiny-llama", "device": "cpu", **meta})


def test_a_measured_profiles_precision_other_than_the_deployments_is_an_error_naming_both(tmp_path):
    """A profile timed in fp32 priced a deployment of precision int8 silently, though a profile is of one
    (model, device, precision, compile mode) and calibrate refuses a grid of another precision."""
    path = _profile(tmp_path / "tiny-fp32.json", precision="fp32")
    measured = {"latency_model": "measured", "latency": {"path": str(path)}}
    with pytest.raises(ConfigError) as exc:
        _deployment(**measured, precision="int8")
    assert (f"the measured profile {path}'s precision (fp32) and precision (int8) disagree" in str(exc.value)
            and "give a profile timed in int8 (controlplane profile --precision int8" in str(exc.value)
            and "or leave precision out (it follows the profile's)" in str(exc.value)), str(exc.value)
    d = _deployment(**measured)  # not given: the profile's
    assert d.precision == "fp32" and "precision" not in d.model_fields_set
    config = load_config(None, {"cluster": {"models": [{"name": "m", **measured}]}})
    assert checked_config(config).cluster.models[0].precision == "fp32"  # (a dumped config reads the same)
    assert _deployment(**measured, precision="fp32").precision == "fp32"
    assert _deployment(**measured, precision="auto").precision == "auto"  # (the live worker's choice)
    bf16 = _profile(tmp_path / "bf16.json", precision="bf16")  # the same size and speed, as latency.precision's
    assert _deployment(latency_model="measured", latency={"path": str(bf16)}, precision="fp16").precision == "fp16"
    old = _profile(tmp_path / "old.json")  # the format's default: fp16
    assert _deployment(latency_model="measured", latency={"path": str(old)}, precision="fp16").precision == "fp16"
    gone = _deployment(latency_model="measured", latency={"path": str(tmp_path / "gone.json")}, precision="int8")
    assert gone.precision == "int8"  # (no file: the latency model's own error says so when the run starts)


def test_a_measured_profile_with_a_byte_order_mark_is_checked_as_it_is_read(tmp_path):
    """The profile reader takes a UTF-8 byte-order mark; the precision check read the file without it, found no
    profile and skipped the check (an fp32 profile priced an int8 deployment)."""
    plain = _profile(tmp_path / "plain.json", precision="fp32")
    marked = tmp_path / "marked.json"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    with pytest.raises(ConfigError, match=r"precision \(fp32\) and precision \(int8\) disagree"):
        _deployment(latency_model="measured", latency={"path": str(marked)}, precision="int8")
