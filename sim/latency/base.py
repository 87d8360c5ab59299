"""The latency-model interface the simulator's workers call once per batching iteration.

A worker doing continuous (iteration-level) batching describes each iteration by the
shape of its batch; a :class:`LatencyModel` turns that shape into a duration. Models
must be pure functions of the shape (no wall clock, no global RNG) so simulations are
reproducible and can be cached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IterationShape", "LatencyModel", "setting_number"]


def setting_number(name: str, value: object) -> float:
    """A latency setting as a float: a number, or a string that is one (YAML reads ``2e-4`` as the string
    "2e-4"); anything else (``null``, ``true``, ``fast``) a ValueError naming the setting. Checked at load."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class IterationShape:
    """What one engine iteration processes.

    ``prefill_chunk_tokens[i]`` and ``prefill_context_tokens[i]`` describe the same
    prefilling request; decode requests process exactly one token each.
    """

    prefill_chunk_tokens: Sequence[int] = ()  # tokens processed this iteration, per prefilling request
    prefill_context_tokens: Sequence[int] = ()  # tokens already in that request's KV cache before this chunk (prefix hits / earlier chunks)
    decode_context_tokens: Sequence[int] = ()  # KV length of each decoding request before this iteration

    @property
    def num_prefill_tokens(self) -> int:
        return int(sum(self.prefill_chunk_tokens))

    @property
    def num_decode_seqs(self) -> int:
        return len(self.decode_context_tokens)

    @property
    def num_tokens(self) -> int:
        """Tokens through the linear layers: every prefill token plus one per decode."""
        return self.num_prefill_tokens + self.num_decode_seqs

    @property
    def is_empty(self) -> bool:
        return not self.prefill_chunk_tokens and not self.decode_context_tokens


def prefill_contexts(shape: IterationShape) -> Sequence[int]:
    """Per-prefill context lengths, defaulting to zeros when the caller omitted them."""
    if len(shape.prefill_context_tokens) == 0:
        return (0,) * len(shape.prefill_chunk_tokens)
    if len(shape.prefill_context_tokens) != len(shape.prefill_chunk_tokens):
        raise ValueError(
            "prefill_context_tokens must be empty or match prefill_chunk_tokens in length "
            f"({len(shape.prefill_context_tokens)} != {len(shape.prefill_chunk_tokens)})"
        )
    return shape.prefill_context_tokens


def decode_run_args(decode_context_tokens, num_iterations: int, dtype=np.int64) -> tuple[np.ndarray, int]:
    """Validate and normalise `decode_run_s` arguments: (contexts as an array, iteration count)."""
    n = int(num_iterations)
    if n < 0:
        raise ValueError(f"num_iterations must be >= 0, got {num_iterations}")
    return np.asarray(decode_context_tokens, dtype=dtype), n


class LatencyModel(ABC):
    """Maps an iteration's batch shape to its duration in seconds."""

    name: str = "abstract"

    @abstractmethod
    def iteration_s(self, shape: IterationShape) -> float:
        """Duration (s) of one iteration with this batch shape."""

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        """Durations (s) of the next num_iterations decode-only iterations with unchanged membership; each request's context grows by one token per iteration. Base implementation loops iteration_s; subclasses vectorise (this is the simulator's hot path)."""
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        out = np.empty(n, dtype=np.float64)
        for k in range(n):
            out[k] = self.iteration_s(IterationShape(decode_context_tokens=(ctx + k).tolist()))
        return out

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"<{type(self).__name__} {self.name}>"
