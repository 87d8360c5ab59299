"""A worker's ``config`` (the transformers config of a random-weight model) checked when the
worker settings are, so that a bad one is one error naming its key before anything starts.

transformers checks some of it only when the config is built, in the worker's start, with a long
traceback (huggingface_hub's ``StrictDataclassClassValidationError`` for a hidden size that is not
a multiple of the heads), answers an unknown ``model_type`` with a line listing all of its ~400
model types, and accepts sizes below 1 (``num_hidden_layers: -1`` served a model of no layers).
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.errors import did_you_mean

__all__ = ["SIZES", "ModelConfigError", "check_model_config"]

#: The sizes of a model's text config that must be at least 1 (the config's own names; a model type's alias,
#: gpt2's ``n_layer`` for ``num_hidden_layers``, is named as the config gave it).
SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "max_position_embeddings")

_FIELD = re.compile(r"Validation error for field '([^']+)'")


class ModelConfigError(ValueError):
    """What is wrong with a worker's ``config``; ``key`` is the key of it at fault, when one is."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def check_model_config(raw: dict[str, Any]) -> None:
    """Refuse (`ModelConfigError`) a ``config`` transformers cannot build a causal language model from,
    or one with a size below 1, or a vocabulary too small for the byte tokenizer a random-weight model
    gets (`controlplane.live.tokenizer.MIN_VOCAB`)."""
    from transformers import CONFIG_MAPPING, AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from controlplane.live.tokenizer import MIN_VOCAB

    model_type = raw["model_type"]
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        hint = did_you_mean(str(model_type), list(CONFIG_MAPPING.keys()), cutoff=0.75) or " (e.g. 'llama')"
        raise ModelConfigError(f"unknown transformers model type {model_type!r}{hint}", "model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelConfigError(f"model type {model_type!r} has no causal language model in transformers (a worker "
                               "generates text; e.g. 'llama')", "model_type")
    try:
        config = AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
    except Exception as exc:  # huggingface_hub's strict-dataclass errors, transformers' own ValueError / TypeError
        field = _FIELD.match(str(exc))
        cause = exc.__cause__ if exc.__cause__ is not None and type(exc).__module__.startswith("huggingface_hub") \
            else exc
        raise ModelConfigError(" ".join(str(cause).split()) or type(cause).__name__,
                               field.group(1) if field else None) from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    aliases = getattr(text, "attribute_map", None) or {}

    def key(name: str) -> str:  # as the config gave it
        return aliases[name] if name not in raw and aliases.get(name) in raw else name

    for name in SIZES:
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ModelConfigError(f"{value} is no size: it must be at least 1", key(name))
    heads, kv_heads = getattr(text, "num_attention_heads", None), getattr(text, "num_key_value_heads", None)
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        raise ModelConfigError(f"{kv_heads} does not divide num_attention_heads ({heads}): each key/value head "
                               "serves a whole number of attention heads", key("num_key_value_heads"))
    vocab = getattr(text, "vocab_size", None)
    if isinstance(vocab, int) and vocab < MIN_VOCAB:
        raise ModelConfigError(f"{vocab} is too small: a random-weight model's byte tokenizer needs at least "
                               f"{MIN_VOCAB}", key("vocab_size"))
