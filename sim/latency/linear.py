"""A closed-form latency model: cheap, transparent, good for tests and what-if sweeps.

iteration = base + prefill_tokens * a + prefill_tokens * prefill_context * c
          + decode_seqs * b + sum(decode_context) * d   (only if the batch is non-empty)

Defaults are rough numbers for a 7B fp16 model on one A100-80GB: ~14 GB of weights
read per iteration (~5-7 ms), ~0.1 ms per prefill token at ~50% of peak FLOP/s,
~0.5 MB of KV per context token read at ~1.5 TB/s (~0.3 us per context token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import IterationShape, LatencyModel, decode_run_args, prefill_contexts, setting_number

__all__ = ["LinearLatencyModel"]


@dataclass(frozen=True, slots=True)
class _Coeffs:
    base_s: float
    prefill_s_per_token: float
    decode_s_per_seq: float
    decode_s_per_context_token: float
    prefill_s_per_token_context: float


class LinearLatencyModel(LatencyModel):
    """Affine in batch features; an empty iteration costs nothing."""

    name = "linear"

    def __init__(
        self,
        base_s: float = 0.005,
        prefill_s_per_token: float = 1.0e-4,
        decode_s_per_seq: float = 5.0e-5,
        decode_s_per_context_token: float = 3.0e-7,
        prefill_s_per_token_context: float = 0.0,
    ) -> None:
        values = dict(
            base_s=base_s,
            prefill_s_per_token=prefill_s_per_token,
            decode_s_per_seq=decode_s_per_seq,
            decode_s_per_context_token=decode_s_per_context_token,
            prefill_s_per_token_context=prefill_s_per_token_context,
        )
        numbers = {key: setting_number(key, v) for key, v in values.items()}  # ("2e-4": YAML's string, a number)
        for key, v in numbers.items():
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{key} must be a finite non-negative number, got {values[key]!r}")
        self.c = _Coeffs(**numbers)

    def iteration_s(self, shape: IterationShape) -> float:
        if shape.is_empty:
            return 0.0
        c = self.c
        t = c.base_s
        if shape.prefill_chunk_tokens:
            ctx = prefill_contexts(shape)
            for chunk, pre in zip(shape.prefill_chunk_tokens, ctx):
                t += chunk * c.prefill_s_per_token + chunk * (pre + chunk / 2.0) * c.prefill_s_per_token_context
        n = len(shape.decode_context_tokens)
        if n:
            t += n * c.decode_s_per_seq + float(sum(shape.decode_context_tokens)) * c.decode_s_per_context_token
        return float(t)

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations, np.float64)
        if ctx.size == 0:
            return np.zeros(n)
        c = self.c
        b = ctx.size
        k = np.arange(n, dtype=np.float64)
        return c.base_s + b * c.decode_s_per_seq + (ctx.sum() + b * k) * c.decode_s_per_context_token

    def __repr__(self) -> str:
        return f"LinearLatencyModel({self.c})"
