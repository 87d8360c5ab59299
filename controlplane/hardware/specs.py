"""Static descriptions of models, GPUs and weight precisions.

These are the inputs every latency/memory model shares: a :class:`ModelSpec` (shape of
a decoder-only transformer), a :class:`GPUSpec` (capacity and peak rates) and a
:class:`Precision` (bytes per weight and relative speed). Catalogues hold the models
and devices we have real profiles or anchors for; anything else can be built from a
Hugging Face config with :meth:`ModelSpec.from_hf_config`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ModelSpec",
    "GPUSpec",
    "Precision",
    "MODELS",
    "GPUS",
    "PRECISIONS",
    "get_model",
    "get_gpu",
    "get_precision",
    "UnknownSpecError",
]

GiB = 1024**3


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shape of a dense decoder-only transformer (biases and norms are negligible)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int  # width of one MLP branch (for gated MLPs: of the up projection)
    vocab_size: int
    gated_mlp: bool = True
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"ModelSpec.{field} must be positive, got {getattr(self, field)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    @property
    def params_per_layer(self) -> int:
        """Weights of one transformer block (QKV, O, MLP); norms/biases left out."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (self.num_heads + 2 * self.num_kv_heads) + h * d * self.num_heads
        return attn + self.mlp_matrices * h * self.intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def num_params(self) -> int:
        """Total parameters, e.g. ~69.0e9 for Llama-2-70B."""
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.num_layers * self.params_per_layer + self.embedding_params + norms

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """K and V for one token across all layers, whole model (not per GPU)."""
        from controlplane.hardware.kv import kv_bytes_per_token_of

        return kv_bytes_per_token_of(self.num_layers, self.num_kv_heads, self.head_dim, bytes_per_element)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any] | Any, name: str | None = None) -> ModelSpec:
        """Build from a Hugging Face ``config.json`` dict or a ``PretrainedConfig``.

        Understands Llama/Mistral/Qwen2 keys, the older GPT-style aliases (n_layer,
        n_embd, n_head, n_inner) and Qwen-1's doubled ``intermediate_size``.
        """
        if not isinstance(config, Mapping):
            if hasattr(config, "to_dict"):
                config = config.to_dict()
            else:
                raise TypeError(f"expected a dict or PretrainedConfig, got {type(config).__name__}")
        c = dict(config)

        def pick(*keys: str, default: Any = None) -> Any:
            for k in keys:
                if c.get(k) is not None:
                    return c[k]
            return default

        model_type = str(c.get("model_type", "")).lower()
        layers = pick("num_hidden_layers", "n_layer", "num_layers")
        hidden = pick("hidden_size", "n_embd", "d_model")
        heads = pick("num_attention_heads", "n_head", "num_heads")
        missing = [k for k, v in (("num_hidden_layers", layers), ("hidden_size", hidden), ("num_attention_heads", heads)) if v is None]
        if missing:
            raise ValueError(f"HF config lacks {missing}; keys present: {sorted(c)}")
        kv_heads = pick("num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num")
        if kv_heads is None:
            kv_heads = 1 if c.get("multi_query") else heads
        inter = pick("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim")
        if inter is None:
            inter = 4 * hidden
        act = str(pick("hidden_act", "activation_function", default="")).lower()
        gated = _is_gated(model_type, act, c)
        if model_type == "qwen":  # Qwen-1 stores 2x the per-branch width
            inter = inter // 2
        if name is None:
            name = str(pick("_name_or_path", "name_or_path", default="") or model_type or "custom")
        return cls(
            name=name,
            num_layers=int(layers),
            hidden_size=int(hidden),
            num_heads=int(heads),
            num_kv_heads=int(kv_heads),
            intermediate_size=int(inter),
            vocab_size=int(pick("vocab_size", "padded_vocab_size", default=32000)),
            gated_mlp=gated,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            max_position_embeddings=int(pick("max_position_embeddings", "n_positions", "seq_length", default=4096)),
        )


_GATED_TYPES = {"llama", "mistral", "mixtral", "qwen", "qwen2", "internlm", "internlm2", "gemma", "gemma2", "yi", "baichuan", "deepseek", "phi3", "chatglm"}
_UNGATED_TYPES = {"phi", "gpt2", "gpt_neox", "opt", "bloom", "falcon", "gpt_bigcode", "gptj", "mpt", "starcoder2"}


def _is_gated(model_type: str, act: str, c: Mapping[str, Any]) -> bool:
    if model_type in _GATED_TYPES:
        return True
    if model_type in _UNGATED_TYPES:
        return False
    return act in ("silu", "swiglu", "swish", "geglu")


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """Peak capability of one accelerator; models apply their own efficiency factors."""

    name: str
    memory_bytes: int
    fp16_flops: float  # dense tensor-core FLOP/s
    memory_bandwidth_bytes_s: float
    interconnect_bytes_s: float = 64e9  # per-GPU bus bandwidth used by TP all-reduce

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0 or self.fp16_flops <= 0 or self.memory_bandwidth_bytes_s <= 0:
            raise ValueError(f"GPUSpec {self.name}: capacities must be positive")


@dataclass(frozen=True, slots=True)
class Precision:
    """Weight storage format: bytes per weight, KV element size and relative speed.

    ``speed_factor`` scales achievable matmul throughput relative to fp16 (fp32 runs on
    TF32 at half rate; int8 and fp8 W8A8 double it, less the quantisation's overhead; nf4 pays
    dequantisation). ``kv_bytes_per_element``: the KV cache stays in 16 bits under 8- and 4-bit
    weights (an engine's own fp8 KV cache, vLLM's ``kv_cache_dtype``, is not modelled).
    """

    name: str
    bytes_per_weight: float
    kv_bytes_per_element: float
    speed_factor: float


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", 4.0, 4.0, 0.5),
    "fp16": Precision("fp16", 2.0, 2.0, 1.0),
    "bf16": Precision("bf16", 2.0, 2.0, 1.0),
    "int8": Precision("int8", 1.0, 2.0, 1.6),
    "fp8": Precision("fp8", 1.0, 2.0, 1.6),  # (e4m3 weights and activations; simulated only: no live worker runs it)
    # 4 bits + double-quantised absmax: 8 bits per 64 weights + fp32 per 256 blocks.
    "nf4": Precision("nf4", (4 + 8 / 64 + 32 / (64 * 256)) / 8, 2.0, 0.6),
}


def _m(name: str, L: int, h: int, nh: int, nkv: int, inter: int, vocab: int, gated: bool = True, ctx: int = 4096, tied: bool = False) -> ModelSpec:
    return ModelSpec(name, L, h, nh, nkv, inter, vocab, gated, tied, ctx)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _m("meta-llama/Llama-2-7b-hf", 32, 4096, 32, 32, 11008, 32000),
        _m("meta-llama/Llama-2-70b-hf", 80, 8192, 64, 8, 28672, 32000),
        _m("codellama/CodeLlama-34b-Instruct-hf", 48, 8192, 64, 8, 22016, 32000, ctx=16384),
        _m("meta-llama/Meta-Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, ctx=8192),
        _m("meta-llama/Meta-Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, ctx=8192),
        _m("Qwen/Qwen-72B", 80, 8192, 64, 64, 24576, 152064, ctx=32768),
        _m("microsoft/phi-2", 32, 2560, 32, 32, 10240, 51200, gated=False, ctx=2048),
        _m("internlm/internlm-20b", 60, 5120, 40, 40, 13824, 103168),
    )
}
_MODEL_ALIASES = {
    "codellama/CodeLlama-34b-hf": "codellama/CodeLlama-34b-Instruct-hf",
    "CodeLlama-34b": "codellama/CodeLlama-34b-Instruct-hf",
    "meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Meta-Llama-3-8B",
    "meta-llama/Meta-Llama-3-70B-Instruct": "meta-llama/Meta-Llama-3-70B",
    "meta-llama/Llama-2-7b-chat-hf": "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-70b-chat-hf": "meta-llama/Llama-2-70b-hf",
    "llama2-70b": "meta-llama/Llama-2-70b-hf",
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
}

GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("a100-80gb", 80 * GiB, 312e12, 2.039e12, 300e9),
        GPUSpec("h100-80gb", 80 * GiB, 989e12, 3.35e12, 450e9),
        GPUSpec("h200", 141 * 10**9, 989e12, 4.8e12, 450e9),
        GPUSpec("l4", 24 * GiB, 121e12, 300e9, 32e9),
        GPUSpec("a10g", 24 * GiB, 70e12, 600e9, 32e9),
        GPUSpec("cpu", 64 * GiB, 2e12, 100e9, 20e9),  # placeholder for CPU-only smoke runs
    )
}
_GPU_ALIASES = {"a100": "a100-80gb", "h100": "h100-80gb", "h200-141gb": "h200", "a10": "a10g"}


class UnknownSpecError(KeyError):
    """A model, GPU or precision the catalogue lacks; its text is the message (a KeyError's would be quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: The config's own GPUs and models (`cluster.gpus`, `cluster.model_specs`: `controlplane.hardware.own_specs`):
#: while a config is validated, its own alone (a context); else those of the configs validated in this process
#: (the last one's definition of a name).
_OWN: contextvars.ContextVar[dict[str, dict[str, Any]] | None] = contextvars.ContextVar("own_specs", default=None)
_REGISTERED: dict[str, dict[str, Any]] = {"gpu": {}, "model": {}}
#: Where a name the catalogue lacks may be described, by kind.
_OWN_KEY = {"gpu": "cluster.gpus", "model": "cluster.model_specs"}


def own_specs(kind: str) -> dict[str, Any]:
    """The own GPUs (``kind`` ``gpu``) or models (``model``) a lookup finds besides the catalogue's, by name."""
    current = _OWN.get()
    return (current if current is not None else _REGISTERED)[kind]


def _lookup(table: Mapping[str, Any], aliases: Mapping[str, str], key: str, kind: str) -> Any:
    if key in table:
        return table[key]
    if key in aliases:
        return table[aliases[key]]
    lowered = {k.lower(): k for k in (*table, *aliases)}
    short = {k.split("/")[-1].lower(): k for k in (*table, *aliases)}
    hit = lowered.get(key.lower()) or short.get(key.lower().split("/")[-1])
    if hit is not None:
        return table[hit] if hit in table else table[aliases[hit]]
    own = {k.lower(): spec for k, spec in own_specs(kind).items()}
    if key.lower() in own:
        return own[key.lower()]
    mine = f"; of your own: {', '.join(sorted(own_specs(kind)))}" if own else ""
    raise UnknownSpecError(f"unknown {kind} {key!r}; known: {', '.join(sorted(table))} (aliases: "
                           f"{', '.join(sorted(aliases))}){mine}; describe one of your own under "
                           f"{_OWN_KEY[kind]}.NAME (docs/configuration.md)")


def get_model(model: str | ModelSpec) -> ModelSpec:
    """Catalogue lookup (exact name, alias, or case-insensitive repo-less name), else the config's own models
    (`own_specs`, in any case)."""
    return model if isinstance(model, ModelSpec) else _lookup(MODELS, _MODEL_ALIASES, model, "model")


def get_gpu(gpu: str | GPUSpec) -> GPUSpec:
    """Catalogue lookup (exact name, alias, in any case), else the config's own GPUs (`own_specs`, in any case)."""
    return gpu if isinstance(gpu, GPUSpec) else _lookup(GPUS, _GPU_ALIASES, gpu, "gpu")


def get_precision(precision: str | Precision) -> Precision:
    if isinstance(precision, Precision):
        return precision
    try:
        return PRECISIONS[precision.lower()]
    except KeyError:
        raise UnknownSpecError(f"unknown precision {precision!r}; known: {', '.join(sorted(PRECISIONS))}") from None
