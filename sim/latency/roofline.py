"""Analytic roofline latency for any ModelSpec on any GPUSpec (no profile needed).

Per iteration and per GPU (everything divided by tensor_parallel):

* linear layers: FLOPs = 2 x block params x tokens + 2 x vocab x hidden x sequences
  (LM head for each sequence that emits a token); bytes = weights read once;
* attention: FLOPs = 4 x q_heads x head_dim x layers x attended pairs (causal for
  prefill chunks); bytes = KV cache read for the context plus the new KV written;
* each phase costs max(FLOPs / (peak x speed_factor x compute_efficiency),
  bytes / (bandwidth x efficiency)), with a lower efficiency for paged KV reads;
* tensor parallelism adds two ring all-reduces per layer of tokens x hidden fp16
  activations, each latency_s + 2 (tp-1)/tp x bytes / interconnect;
* plus a fixed per-iteration overhead (kernel launches, scheduling).

Defaults put Llama-2-70B/TP2/A100 within ~10% of the Vidur profile model.
"""

from __future__ import annotations

import numpy as np

from .base import IterationShape, LatencyModel, prefill_contexts, decode_run_args
from controlplane.hardware.memory_plan import kv_bytes_per_token_per_gpu
from controlplane.hardware.specs import GPUSpec, ModelSpec, Precision, get_gpu, get_model, get_precision

__all__ = ["RooflineModel"]


class RooflineModel(LatencyModel):
    name = "roofline"

    def __init__(
        self,
        model: str | ModelSpec = "meta-llama/Llama-2-7b-hf",
        gpu: str | GPUSpec = "a100-80gb",
        tensor_parallel: int = 1,
        precision: str | Precision = "fp16",
        *,
        compute_efficiency: float = 0.6,
        memory_efficiency: float = 0.65,
        attention_memory_efficiency: float = 0.45,
        allreduce_latency_s: float = 3.0e-5,
        activation_bytes: float = 2.0,
        overhead_s: float = 1.0e-3,
    ) -> None:
        self.model = m = get_model(model)
        self.gpu = g = get_gpu(gpu)
        self.precision = p = get_precision(precision)
        tp = self.tensor_parallel = int(tensor_parallel)
        for key, val in (
            ("compute_efficiency", compute_efficiency),
            ("memory_efficiency", memory_efficiency),
            ("attention_memory_efficiency", attention_memory_efficiency),
        ):
            if not 0 < val <= 1:
                raise ValueError(f"{key} must be in (0, 1], got {val}")
        if allreduce_latency_s < 0 or overhead_s < 0:
            raise ValueError("latencies must be non-negative")
        kv_tok = kv_bytes_per_token_per_gpu(m, p, tp)  # validates tp against the model
        self._flops_rate = g.fp16_flops * p.speed_factor * compute_efficiency
        self._bytes_rate = g.memory_bandwidth_bytes_s * memory_efficiency
        self._kv_rate = g.memory_bandwidth_bytes_s * attention_memory_efficiency  # paged KV reads are less regular
        lm_head = m.vocab_size * m.hidden_size
        # Per-GPU constants.
        self._lin_flops_per_token = 2.0 * m.num_layers * m.params_per_layer / tp
        self._lm_flops_per_seq = 2.0 * lm_head / tp
        self._weight_bytes = (m.num_layers * m.params_per_layer + lm_head) * p.bytes_per_weight / tp
        self._attn_flops_per_pair = 4.0 * m.num_layers * (m.num_heads // tp) * m.head_dim
        self._kv_bytes_per_token = float(kv_tok)
        if tp > 1:
            self._ar_fixed = 2 * m.num_layers * allreduce_latency_s
            self._ar_per_token = 2 * m.num_layers * 2.0 * (tp - 1) / tp * m.hidden_size * activation_bytes / g.interconnect_bytes_s
        else:
            self._ar_fixed = 0.0
            self._ar_per_token = 0.0
        self.overhead_s = float(overhead_s)

    def _linear_s(self, tokens: int, seqs: int) -> float:
        flops = self._lin_flops_per_token * tokens + self._lm_flops_per_seq * seqs
        return max(flops / self._flops_rate, self._weight_bytes / self._bytes_rate)

    def _fixed_s(self, tokens: int, seqs: int) -> float:
        return self.overhead_s + self._linear_s(tokens, seqs) + self._ar_fixed + self._ar_per_token * tokens

    def iteration_s(self, shape: IterationShape) -> float:
        chunks = shape.prefill_chunk_tokens
        dec = shape.decode_context_tokens
        np_, nd = len(chunks), len(dec)
        if np_ == 0 and nd == 0:
            return 0.0
        tokens = (int(sum(chunks)) if np_ else 0) + nd
        pairs = 0.0
        kv_tokens = 0.0
        if np_:
            for c, p in zip(chunks, prefill_contexts(shape)):
                pairs += c * (p + (c + 1) / 2.0)
                kv_tokens += p + c
        if nd:
            s = float(sum(dec))
            pairs += s + nd
            kv_tokens += s + nd
        attn = max(self._attn_flops_per_pair * pairs / self._flops_rate, self._kv_bytes_per_token * kv_tokens / self._kv_rate)
        return self._fixed_s(tokens, np_ + nd) + attn

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        b = int(ctx.size)
        if b == 0 or n == 0:
            return np.zeros(n)
        fixed = self._fixed_s(b, b)
        pairs = float(ctx.sum()) + b + b * np.arange(n, dtype=np.float64)
        attn = np.maximum(self._attn_flops_per_pair * pairs / self._flops_rate, self._kv_bytes_per_token * pairs / self._kv_rate)
        return fixed + attn

    def __repr__(self) -> str:
        return f"RooflineModel(model={self.model.name!r}, gpu={self.gpu.name!r}, tensor_parallel={self.tensor_parallel}, precision={self.precision.name!r})"
