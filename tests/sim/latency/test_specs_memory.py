from __future__ import annotations

import pytest

from controlplane.hardware.memory_plan import cold_start_s, plan_replica_memory, weights_bytes_per_gpu
from controlplane.hardware.specs import GPUS, MODELS, PRECISIONS, ModelSpec, get_gpu, get_model

GiB = 1024**3


def test_anchor_memory_plan_matches_vidur():
    plan = plan_replica_memory("meta-llama/Llama-2-70b-hf", "a100-80gb", tensor_parallel=2)
    assert plan.weights_bytes_per_gpu == pytest.approx(63.75 * GiB)
    assert plan.num_kv_blocks == 3328
    assert plan.block_size == 16
    assert plan.max_kv_tokens == 53248
    assert plan.kv_bytes_per_token_per_gpu == 2 * 80 * 4 * 128 * 2


def test_block_granular_pool_is_larger_than_slot_pool():
    slot = plan_replica_memory("meta-llama/Llama-2-70b-hf", "a100", tensor_parallel=2)
    exact = plan_replica_memory("meta-llama/Llama-2-70b-hf", "a100", tensor_parallel=2, request_slot_tokens=None)
    assert exact.num_kv_blocks >= slot.num_kv_blocks
    assert exact.num_kv_blocks - slot.num_kv_blocks < 4096 // 16


@pytest.mark.parametrize("low,high", [("int8", "fp16"), ("nf4", "int8"), ("fp16", "fp32")])
def test_precision_changes_weights_and_kv_capacity(low, high):
    kw = dict(tensor_parallel=1, request_slot_tokens=None)
    a = plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100", precision=low, **kw)
    b = plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100", precision=high, **kw)
    assert a.weights_bytes_per_gpu < b.weights_bytes_per_gpu
    assert a.max_kv_tokens > b.max_kv_tokens


def test_nf4_bytes_include_double_quant_overhead():
    assert 0.5 < PRECISIONS["nf4"].bytes_per_weight < 0.52
    w16 = weights_bytes_per_gpu("meta-llama/Llama-2-7b-hf", "fp16")
    w4 = weights_bytes_per_gpu("meta-llama/Llama-2-7b-hf", "nf4")
    assert 0.25 < w4 / w16 < 0.26


def test_activation_reserve_and_tp_reduce_blocks_per_gpu():
    base = plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100", request_slot_tokens=None)
    act = plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100", request_slot_tokens=None, activation_bytes=4 * GiB)
    assert act.num_kv_blocks < base.num_kv_blocks
    tp2 = plan_replica_memory("meta-llama/Llama-2-7b-hf", "a100", tensor_parallel=2, request_slot_tokens=None)
    assert tp2.weights_bytes_per_gpu < base.weights_bytes_per_gpu
    assert tp2.kv_bytes_per_token_per_gpu * 2 == base.kv_bytes_per_token_per_gpu


def test_model_that_does_not_fit_raises():
    with pytest.raises(ValueError, match="does not fit"):
        plan_replica_memory("meta-llama/Llama-2-70b-hf", "l4", tensor_parallel=1)
    with pytest.raises(ValueError, match="tensor_parallel"):
        plan_replica_memory("meta-llama/Llama-2-70b-hf", "a100", tensor_parallel=3)


def test_catalogue_param_counts():
    expect = {
        "meta-llama/Llama-2-7b-hf": 6.74e9,
        "meta-llama/Llama-2-70b-hf": 68.98e9,
        "meta-llama/Meta-Llama-3-8B": 8.03e9,
        "meta-llama/Meta-Llama-3-70B": 70.55e9,
        "Qwen/Qwen-72B": 72.29e9,
        "microsoft/phi-2": 2.78e9,
        "internlm/internlm-20b": 20.09e9,
        "codellama/CodeLlama-34b-Instruct-hf": 33.74e9,
    }
    for name, n in expect.items():
        assert MODELS[name].num_params == pytest.approx(n, rel=0.01), name
    assert get_model("Llama-2-70b-hf") is MODELS["meta-llama/Llama-2-70b-hf"]
    assert get_model("CodeLlama-34b").num_layers == 48
    assert {"a100-80gb", "h100-80gb", "h200", "l4", "a10g", "cpu"} <= set(GPUS)
    assert get_gpu("a100").name == "a100-80gb"
    with pytest.raises(KeyError, match="known"):
        get_gpu("tpu-v9")


def test_from_hf_config_dict_and_object():
    llama = {
        "model_type": "llama",
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 32000,
        "hidden_act": "silu",
        "_name_or_path": "meta-llama/Llama-2-70b-hf",
    }
    spec = ModelSpec.from_hf_config(llama)
    assert spec == MODELS["meta-llama/Llama-2-70b-hf"]

    class FakePretrained:
        def to_dict(self):
            return {"model_type": "phi", "num_hidden_layers": 32, "hidden_size": 2560, "num_attention_heads": 32,
                    "intermediate_size": 10240, "vocab_size": 51200, "hidden_act": "gelu_new"}

    phi = ModelSpec.from_hf_config(FakePretrained(), name="microsoft/phi-2")
    assert not phi.gated_mlp and phi.num_kv_heads == 32 and phi.num_params == pytest.approx(2.78e9, rel=0.01)
    qwen = ModelSpec.from_hf_config({"model_type": "qwen", "num_hidden_layers": 80, "hidden_size": 8192,
                                     "num_attention_heads": 64, "intermediate_size": 49152, "vocab_size": 152064})
    assert qwen.intermediate_size == 24576 and qwen.gated_mlp
    gpt2 = ModelSpec.from_hf_config({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257})
    assert gpt2.intermediate_size == 3072 and not gpt2.gated_mlp
    with pytest.raises(ValueError, match="lacks"):
        ModelSpec.from_hf_config({"hidden_size": 10})


def test_cold_start_scales_with_bandwidth_and_tp():
    slow = cold_start_s("meta-llama/Llama-2-70b-hf", "fp16", 2, load_bandwidth_bytes_s=1e9)
    fast = cold_start_s("meta-llama/Llama-2-70b-hf", "fp16", 2, load_bandwidth_bytes_s=4e9)
    tp4 = cold_start_s("meta-llama/Llama-2-70b-hf", "fp16", 4, load_bandwidth_bytes_s=1e9)
    q = cold_start_s("meta-llama/Llama-2-70b-hf", "int8", 2, load_bandwidth_bytes_s=1e9)
    assert fast < slow and tp4 < slow and q < slow
