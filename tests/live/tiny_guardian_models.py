"""Tiny random-weight guardian models saved as a user saves theirs (``save_pretrained``), for the live tests."""

from __future__ import annotations

from pathlib import Path


def tiny_llama_config():
    """A one-layer Llama small enough to load in a test; the judge's and the classifier's shape."""
    import transformers

    return transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                    pad_token_id=0)


def save_tiny_judge(path: Path) -> Path:
    """A causal-LM judge's folder at ``path`` (seeded: the same weights each time)."""
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(tiny_llama_config()).save_pretrained(path)
    return path
