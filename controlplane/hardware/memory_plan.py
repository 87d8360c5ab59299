"""How many KV-cache blocks a replica has, and how long it takes to load.

The default rules follow Vidur's memory planner (vidur/scheduler/utils/memory_planner.py
and vidur/utils/param_counter.py) so simulated replicas admit the same number of
requests as the reference runs: weights are the transformer blocks only (QKV, O, MLP,
sharded over TP with KV heads rounded up per worker), ``memory_fraction`` of device
memory is usable, and the KV pool is sized in whole max-length request slots
(``request_slot_tokens``), each of whole blocks: a slot of 4,096 tokens in blocks of 48 is 86
blocks (4,128 tokens; Vidur's 85 held 4,080, less than a slot). Pass ``request_slot_tokens=None``
for a plain block-granular pool (a slot shorter than a block is an error), and
``include_embeddings=True`` to also charge embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Any

from controlplane.hardware.kv import kv_bytes_per_token_of
from controlplane.hardware.specs import GPUSpec, ModelSpec, Precision, get_gpu, get_model, get_precision

__all__ = [
    "DEFAULT_COLD_START_S",
    "ReplicaMemory",
    "cold_start_s",
    "deployment_cold_start_s",
    "deployment_model_name",
    "known_model",
    "kv_bytes_per_token_per_gpu",
    "plan_replica_memory",
    "slot_below_block",
    "weights_bytes_per_gpu",
]

#: Cold start of a replica whose model the catalogue does not know (and no cold_start_s given).
DEFAULT_COLD_START_S = 30.0


@dataclass(frozen=True, slots=True)
class ReplicaMemory:
    """How one replica's device memory splits between weights and the KV cache."""

    weights_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    num_kv_blocks: int
    block_size: int
    max_kv_tokens: int
    #: Blocks of one request slot (``request_slot_tokens`` rounded up to whole blocks); None: block-granular.
    blocks_per_slot: int | None = None


def _check_tp(model: ModelSpec, tensor_parallel: int) -> None:
    if tensor_parallel < 1:
        raise ValueError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
    if model.num_heads % tensor_parallel or model.hidden_size % tensor_parallel:
        raise ValueError(
            f"{model.name}: tensor_parallel={tensor_parallel} must divide num_heads={model.num_heads} "
            f"and hidden_size={model.hidden_size}"
        )


def weights_bytes_per_gpu(
    model: ModelSpec | str,
    precision: Precision | str = "fp16",
    tensor_parallel: int = 1,
    *,
    include_embeddings: bool = False,
) -> int:
    """Bytes of weights one TP shard holds (Vidur's per-device parameter count)."""
    m, p = get_model(model), get_precision(precision)
    _check_tp(m, tensor_parallel)
    h, d = m.hidden_size, m.head_dim
    q_per = m.num_heads // tensor_parallel
    kv_per = math.ceil(m.num_kv_heads / tensor_parallel)
    per_layer = h * d * (q_per + 2 * kv_per) + h * d * q_per + m.mlp_matrices * h * m.intermediate_size // tensor_parallel
    params = per_layer * m.num_layers
    if include_embeddings:
        params += m.embedding_params // tensor_parallel
    return int(math.ceil(params * p.bytes_per_weight))


def kv_bytes_per_token_per_gpu(model: ModelSpec | str, precision: Precision | str = "fp16", tensor_parallel: int = 1) -> int:
    m, p = get_model(model), get_precision(precision)
    _check_tp(m, tensor_parallel)
    kv_per = math.ceil(m.num_kv_heads / tensor_parallel)
    return int(kv_bytes_per_token_of(m.num_layers, kv_per, m.head_dim, p.kv_bytes_per_element))


def plan_replica_memory(
    model: ModelSpec | str,
    gpu: GPUSpec | str,
    *,
    tensor_parallel: int = 1,
    precision: Precision | str = "fp16",
    block_size: int = 16,
    memory_fraction: float = 0.9,
    activation_bytes: int | None = None,
    request_slot_tokens: int | None = 4096,
    include_embeddings: bool = False,
) -> ReplicaMemory:
    """KV capacity of one replica (TP shards share the token count).

    Reproduces the Vidur anchors: Llama-2-70B, A100-80GB, TP2, fp16 -> 63.75 GiB of
    weights per GPU and 3,328 blocks of 16 tokens (53,248 tokens).
    """
    m, g = get_model(model), get_gpu(gpu)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    weights = weights_bytes_per_gpu(m, precision, tensor_parallel, include_embeddings=include_embeddings)
    kv_tok = kv_bytes_per_token_per_gpu(m, precision, tensor_parallel)
    free = g.memory_bytes * memory_fraction - weights - (activation_bytes or 0)
    blocks_per_slot = None
    if request_slot_tokens:
        if request_slot_tokens < block_size:
            raise ValueError(slot_below_block(request_slot_tokens, block_size))
        blocks_per_slot = -(-request_slot_tokens // block_size)  # whole blocks that hold a slot's tokens
        slots = int(free // (kv_tok * blocks_per_slot * block_size)) if free > 0 else 0
        blocks = slots * blocks_per_slot
    else:
        blocks = int(free // (kv_tok * block_size)) if free > 0 else 0
    if blocks <= 0:
        need = weights + (activation_bytes or 0) + kv_tok * (blocks_per_slot or 1) * block_size
        raise ValueError(
            f"{m.name} does not fit on {g.name} with tensor_parallel={tensor_parallel}, "
            f"precision={get_precision(precision).name}: needs ~{need / 2**30:.1f} GiB per GPU, "
            f"usable {g.memory_bytes * memory_fraction / 2**30:.1f} GiB"
        )
    return ReplicaMemory(
        weights_bytes_per_gpu=weights,
        kv_bytes_per_token_per_gpu=kv_tok,
        num_kv_blocks=blocks,
        block_size=block_size,
        max_kv_tokens=blocks * block_size,
        blocks_per_slot=blocks_per_slot,
    )


def slot_below_block(request_slot_tokens: int, block_size: int) -> str:
    """Why a request slot shorter than a KV block cannot size a KV cache (it held no whole block: every model
    'did not fit')."""
    return (f"request_slot_tokens ({request_slot_tokens}) is less than the KV block size ({block_size}): the memory "
            "plan sizes the KV cache in request slots of whole blocks; give request_slot_tokens of at least one "
            "block (a multiple of it), none (null) for a block-granular cache, or a smaller kv_block_size")


def cold_start_s(
    model: ModelSpec | str,
    precision: Precision | str = "fp16",
    tensor_parallel: int = 1,
    load_bandwidth_bytes_s: float = 2.0e9,
    fixed_overhead_s: float = 15.0,
) -> float:
    """Time for a new replica to become ready: shards load in parallel, plus engine start.

    ``load_bandwidth_bytes_s`` is per GPU (local NVMe ~2-5 GB/s, network store less);
    ``fixed_overhead_s`` covers process start, CUDA init and graph capture.
    """
    if load_bandwidth_bytes_s <= 0:
        raise ValueError("load_bandwidth_bytes_s must be positive")
    shard = weights_bytes_per_gpu(model, precision, tensor_parallel, include_embeddings=True)
    return fixed_overhead_s + shard / load_bandwidth_bytes_s


def planned_precision(deployment: Any) -> str:
    """The weight precision a deployment's memory plan and cold start size: its ``precision``, where ``auto`` (the
    live worker's own choice, `controlplane.live.model_source.resolve_precision`) is what the worker picks on that
    device: fp32 on ``gpu: cpu``, else 2 bytes a weight (bf16 or fp16; the same size)."""
    precision = deployment.precision
    if precision != "auto":
        return precision
    return "fp32" if str(deployment.gpu).lower() == "cpu" else "fp16"


def deployment_model_name(deployment: Any) -> str | None:
    """The catalogue model a deployment serves: ``model_spec``, else its latency settings' ``model`` (when it is
    a name: anything else is its latency model's to refuse, naming the setting)."""
    if deployment.model_spec:
        return deployment.model_spec
    model = deployment.latency.get("model")
    return model if isinstance(model, str) else None


def known_model(deployment: Any) -> ModelSpec | None:
    """The deployment's ModelSpec, or None when it names none or one the catalogue lacks.

    An explicit ``model_spec`` must be known; a latency ``model`` may name something only its
    latency model understands, and then memory stays as configured.
    """
    name = deployment_model_name(deployment)
    if name is None:
        return None
    try:
        return get_model(name)
    except KeyError:
        if deployment.model_spec:
            raise
        return None


def deployment_cold_start_s(deployment: Any, *, load_bandwidth_bytes_s: float = 2.0e9,
                            fixed_overhead_s: float = 15.0) -> float:
    """Seconds from scale-up to ready: ``cold_start_s`` if set, else weight shards over load speed (the
    deployment's ``load_bandwidth_gb_s`` when it has one, else ``load_bandwidth_bytes_s``)."""
    if deployment.cold_start_s is not None:
        return float(deployment.cold_start_s)
    model = known_model(deployment)
    if model is None:
        return DEFAULT_COLD_START_S
    configured = getattr(deployment, "load_bandwidth_gb_s", None)  # cluster.models[].load_bandwidth_gb_s
    if configured is not None:
        load_bandwidth_bytes_s = float(configured) * 1e9
    return cold_start_s(model, planned_precision(deployment), deployment.gpus_per_replica,
                        load_bandwidth_bytes_s=load_bandwidth_bytes_s, fixed_overhead_s=fixed_overhead_s)
