"""Where a live worker's model comes from, and loading it at a given precision.

A worker serves either a local Hugging Face model directory or a random-weight model built from a
transformers config (a preset or an explicit dict). Random weights let the control plane exercise
real torch compute - batching, KV growth, quantization speed - without downloading anything.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.live.quantize import (
    PrecisionUnavailable,
    int8_unavailable_reason,
    model_bytes,
    nf4_unavailable_reason,
    nf4_compute_dtype,
    quantize_int8,
    quantize_nf4,
)
from controlplane.live.random_model_config import check_model_config
from controlplane.live.tokenizer import build_byte_tokenizer

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8", "nf4"]

_INIT_LOCK = threading.Lock()  # one random init at a time per process (see `_build`)

_LLAMA_COMMON: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 512,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.1,  # larger than usual: random models then give varied, context-dependent text
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# Sizes are multiples of 64 so every Linear suits bitsandbytes blocks and int8 kernels.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        **_LLAMA_COMMON,
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small-llama": {
        **_LLAMA_COMMON,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    # Big enough (~100M params) that weight bandwidth dominates decode, so int8 matters on CPU.
    "medium-llama": {
        **_LLAMA_COMMON,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
    },
}

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
#: The modes torch.compile documents ("default", "reduce-overhead", "max-autotune" or "max-autotune-no-cudagraphs");
#: another is checked against the installed torch's own list (`torch_compile_modes`).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class WorkerModelSettings(BaseModel):
    """What model a live worker loads and how. Exactly one of path / config / preset (default: tiny-llama)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    config: dict[str, Any] | None = None
    preset: str | None = None
    precision: Precision = "auto"
    compile: bool = False
    compile_mode: str = "reduce-overhead"
    device: str = "auto"
    seed: int = 0
    max_seq_len: int = Field(default=2048, ge=2)
    # Prefix reuse: prompt KV kept per worker (LRU, tokens; 0: off) in blocks of this many tokens
    prefix_cache_tokens: int = Field(default=0, ge=0)
    prefix_block_tokens: int = Field(default=16, ge=1)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("compile_mode")
    @classmethod
    def _check_compile_mode(cls, value: str) -> str:
        """A mode torch.compile knows, checked when the config loads: an unknown one failed every worker's start
        ("Unrecognized mode=turbo"), and the replacements' after it."""
        if value in COMPILE_MODES:
            return value
        known = torch_compile_modes()
        if value not in known:
            raise ValueError(f"unknown compile_mode {value!r}; torch.compile's modes: {', '.join(known)}")
        return value

    @field_validator("config")
    @classmethod
    def _check_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and "model_type" in value:  # (without one: `_one_source` says so)
            check_model_config(value)  # transformers' checks and more, naming the key (`ModelConfigError.key`)
        return value

    @field_validator("preset")
    @classmethod
    def _check_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {sorted(PRESETS)}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> WorkerModelSettings:
        given = [n for n in ("path", "config", "preset") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of path, config, preset (got {', '.join(given)})")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("config needs a model_type (e.g. 'llama')")
        return self

    def source_name(self) -> str:
        """A short label for reports: the preset, the directory name, or the config's model type."""
        if self.path is not None:
            return os.path.basename(os.path.normpath(self.path))
        if self.config is not None:
            return f"{self.config['model_type']}-custom"
        return self.preset or "tiny-llama"


def torch_compile_modes() -> tuple[str, ...]:
    """The modes the installed torch's ``torch.compile`` takes (its inductor's ``list_mode_options``: a newer torch
    may add some, such as ``lite``); `COMPILE_MODES` where it cannot say. Imports the inductor (seconds): only for a
    mode that is not one of `COMPILE_MODES`."""
    try:
        from torch._inductor import list_mode_options

        return tuple(list_mode_options())
    except Exception:  # (another torch's inductor: the documented ones)
        return COMPILE_MODES


@dataclass
class LoadedModel:
    """A model ready for inference, with what a worker reports about it."""

    model: torch.nn.Module  # possibly a torch.compile wrapper; call it like the model
    tokenizer: Any
    device: torch.device
    precision: str  # resolved: never "auto"
    model_bytes: int
    config: Any = None  # the transformers config
    compiled: bool = False
    name: str = ""
    base_model: torch.nn.Module | None = field(default=None, repr=False)  # uncompiled module

    @property
    def dtype(self) -> torch.dtype:
        """Activation / KV-cache dtype (quantized models compute in fp32 or the nf4 compute dtype)."""
        return activation_dtype(self.precision, self.device)


def resolve_device(device: str) -> torch.device:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PrecisionUnavailable(f"device {device} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PrecisionUnavailable(f"device {device} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp32 on CPU (bf16 matmuls are slow on most CPUs), bf16 or fp16 on CUDA."""
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def activation_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision in _TORCH_DTYPES:
        return _TORCH_DTYPES[precision]
    if precision == "nf4":
        return nf4_compute_dtype(device)
    return torch.float32  # int8 dynamic quantization keeps fp32 activations


def build_config(settings: WorkerModelSettings):
    """The transformers config for a preset / dict source; one that gives no number of positions (under any of
    its config class's names for it) gets ``max_seq_len`` positions. The worker serves
    min(positions, ``max_seq_len``) tokens (`CausalLMBackend`, `load_served_model`)."""
    from transformers import AutoConfig

    raw = copy.deepcopy(settings.config if settings.config is not None else PRESETS[settings.preset or "tiny-llama"])
    model_type = raw.pop("model_type")
    if not set(raw) & position_keys(model_type):
        raw["max_position_embeddings"] = settings.max_seq_len
    return AutoConfig.for_model(model_type, **raw)


def position_keys(model_type: str) -> set[str]:
    """The names a ``model_type``'s config takes its number of positions under: ``max_position_embeddings`` and
    what its class's ``attribute_map`` maps it to or from (GPT-2's ``n_positions``: a worker.config's
    ``n_positions: 128`` was overridden by ``max_position_embeddings: max_seq_len``, mapped onto it, and the
    model served 2048 tokens on 128 positions)."""
    from transformers import CONFIG_MAPPING

    attribute_map = getattr(CONFIG_MAPPING[model_type], "attribute_map", {}) if model_type in CONFIG_MAPPING else {}
    canonical = attribute_map.get("max_position_embeddings", "max_position_embeddings")
    return {"max_position_embeddings", canonical} | {k for k, v in attribute_map.items() if v == canonical}


def check_model_path(path: str | None) -> None:
    """A ValueError unless ``path`` (a worker's model directory) is a directory: models are loaded from disk only,
    and Hugging Face's own error for a path that is not there reads "Repo id must use alphanumeric chars"."""
    if path is not None and not os.path.isdir(path):
        raise ValueError(f"model path {path} is not a directory (models are never downloaded)")


def load_model(settings: WorkerModelSettings) -> LoadedModel:
    """Load (or build) the model on its device at the requested precision.

    Raises ``PrecisionUnavailable`` with the reason when the precision cannot run on the device.
    """
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    _check_precision(precision, device)
    model, tokenizer, config = _build(settings, precision, device)
    model.eval()
    model.requires_grad_(False)
    model = _apply_precision(model, precision, device)
    size = model_bytes(model)
    base = model
    if settings.compile:
        model = torch.compile(model, mode=settings.compile_mode, dynamic=True)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        precision=precision,
        model_bytes=size,
        config=config,
        compiled=settings.compile,
        name=settings.source_name(),
        base_model=base,
    )


def _check_precision(precision: str, device: torch.device) -> None:
    if precision == "int8":
        reason = int8_unavailable_reason(device)
        if reason:
            raise PrecisionUnavailable(reason)
    elif precision == "nf4":
        reason = nf4_unavailable_reason(str(device))  # before building: a big model takes a while
        if reason:
            raise PrecisionUnavailable(reason)
    elif precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 on CPU is slow and numerically fragile; prefer bf16 or fp32", RuntimeWarning, stacklevel=3)
    elif precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionUnavailable(f"{device} does not support bf16")


def _build(settings: WorkerModelSettings, precision: str, device: torch.device):
    from transformers import AutoModelForCausalLM

    # Random init (and any weights a checkpoint lacks) draws from a private RNG stream so the
    # same seed gives the same weights and the caller's global RNG is left as it was. That stream
    # is torch's global generator: the lock keeps workers loading at once on threads of one
    # process from drawing from it in turns (which gave replicas of one model different weights).
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.path is not None:
            check_model_path(settings.path)
            load_dtype = torch.float32 if precision in ("fp32", "int8") else activation_dtype(precision, device)
            model = AutoModelForCausalLM.from_pretrained(settings.path, dtype=load_dtype, local_files_only=True)
            config = model.config
        else:
            config = build_config(settings)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = load_tokenizer(settings.path, config)
    return model, tokenizer, config


def load_tokenizer(path: str | None, config):
    """The tokenizer a worker uses: the model directory's own, else the byte-level one sized to the vocab.

    Needs no weights, so a driver can tokenize for a deployment without loading the model.
    """
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if path is not None and any(os.path.exists(os.path.join(path, n)) for n in names):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    return build_byte_tokenizer(config.vocab_size)


def _apply_precision(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    if precision == "int8":
        return quantize_int8(model.float())  # CPU only, checked earlier
    if precision == "nf4":
        model = model.to(nf4_compute_dtype(device))
        model = quantize_nf4(model, device)
        return model.to(device)
    return model.to(device=device, dtype=_TORCH_DTYPES[precision])
