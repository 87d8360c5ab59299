"""What one token costs in the KV cache: one formula for catalogue models, TP shards and live
transformers configs."""

from __future__ import annotations

from typing import Any

__all__ = ["kv_bytes_per_token", "kv_bytes_per_token_of"]


def kv_bytes_per_token_of(num_layers: int, num_kv_heads: int, head_dim: int, bytes_per_element: float) -> float:
    """K and V of one token over every layer: layers x 2 x kv_heads x head_dim x bytes."""
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_element


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def kv_bytes_per_token(model_config: Any, dtype_bytes: int) -> int:
    """KV-cache bytes one token costs for a transformers config (or a dict with the same keys).

    Grouped-query models count their KV heads (``num_key_value_heads``), not their query heads.
    """
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    layers = int(_cfg(text, "num_hidden_layers"))
    heads = int(_cfg(text, "num_attention_heads"))
    kv_heads = int(_cfg(text, "num_key_value_heads") or heads)
    head_dim = _cfg(text, "head_dim") or int(_cfg(text, "hidden_size")) // heads
    return int(kv_bytes_per_token_of(layers, kv_heads, int(head_dim), int(dtype_bytes)))
