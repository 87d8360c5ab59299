"""Device memory readings and KV sizing arithmetic."""

from __future__ import annotations

import pytest
import torch

from controlplane.live.memory import (
    device_memory,
    kv_bytes_per_token,
    peak_rss_bytes,
    release_cached_memory,
    reset_peak,
    suggest_batch_limits,
)
from controlplane.live.model_source import PRESETS

LLAMA_8B = {  # Llama-3-8B: 32 layers, 8 KV heads of 128 dims
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_size": 4096,
}


def test_cpu_memory_reading_is_sane():
    mem = device_memory("cpu")
    assert 0 < mem.allocated_bytes < mem.total_bytes
    assert 0 < mem.free_bytes <= mem.total_bytes
    assert mem.peak_allocated_bytes >= mem.allocated_bytes
    reset_peak("cpu")
    release_cached_memory("cpu")


def test_peak_rss_follows_a_big_allocation():
    reset_peak("cpu")
    before = peak_rss_bytes()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert peak_rss_bytes() >= before + 48 * 2**20
    del block


def test_cuda_reading_needs_cuda():
    if torch.cuda.is_available():
        assert device_memory("cuda").total_bytes > 0
    else:
        with pytest.raises(RuntimeError):
            device_memory("cuda")


def test_kv_bytes_per_token_counts_kv_heads():
    assert kv_bytes_per_token(LLAMA_8B, 2) == 32 * 2 * 8 * 128 * 2 == 131072
    tiny = PRESETS["tiny-llama"]  # 4 layers, 2 KV heads of 64 dims
    assert kv_bytes_per_token(tiny, 4) == 4 * 2 * 2 * 64 * 4
    assert kv_bytes_per_token({**LLAMA_8B, "head_dim": 64}, 2) == 65536
    no_gqa = {k: v for k, v in LLAMA_8B.items() if k != "num_key_value_heads"}
    assert kv_bytes_per_token(no_gqa, 2) == 4 * 131072


def test_kv_bytes_per_token_reads_transformers_configs(tiny_loaded):
    assert kv_bytes_per_token(tiny_loaded.config, 4) == kv_bytes_per_token(PRESETS["tiny-llama"], 4)


def test_suggest_batch_limits():
    gib = 2**30
    # 10 GiB free, 80% usable = 8 GiB = 65536 tokens of 128 KiB; 2048-token sequences -> 32
    assert suggest_batch_limits(10 * gib, LLAMA_8B, 2, avg_seq_len=2048) == (32, 65536)
    assert suggest_batch_limits(10 * gib, LLAMA_8B, 2, avg_seq_len=16) == (256, 65536)  # capped
    assert suggest_batch_limits(10 * gib, LLAMA_8B, 2, avg_seq_len=16, max_batch=64)[0] == 64
    assert suggest_batch_limits(100_000, LLAMA_8B, 2, avg_seq_len=10) == (0, 0)
    assert suggest_batch_limits(-5, LLAMA_8B, 2, avg_seq_len=10) == (0, 0)
    with pytest.raises(ValueError):
        suggest_batch_limits(gib, LLAMA_8B, 2, avg_seq_len=10, safety=0)
