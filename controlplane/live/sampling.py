"""Per-request sampling and stop conditions.

Each sampled request draws from its own ``torch.Generator`` so that a seeded request reproduces its
output whatever else shares the batch, and nothing touches the process-global RNG.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_EOS = "eos"


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy (the default); otherwise temperature, then top-k / top-p, then a draw."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None  # None: a fresh random seed for this request

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_generator(self, device: torch.device) -> torch.Generator | None:
        """The request's private RNG (None for greedy requests, which draw nothing)."""
        if self.greedy:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        return gen


@dataclass(frozen=True)
class StopCondition:
    """When a request stops.

    ``eos_token_ids=None`` means the model's own EOS ids; ``()`` disables EOS stopping. Stop token
    sequences and stop strings end the request with reason "stop" and are left out of its text.
    """

    eos_token_ids: tuple[int, ...] | None = None
    stop_token_sequences: tuple[tuple[int, ...], ...] = ()
    stop_strings: tuple[str, ...] = ()
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the frozen object hashable and immutable.
        if self.eos_token_ids is not None:
            object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))
        object.__setattr__(self, "stop_token_sequences", tuple(tuple(int(t) for t in s) for s in self.stop_token_sequences))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        if any(len(s) == 0 for s in self.stop_token_sequences):
            raise ValueError("stop token sequences must be non-empty")
        if any(s == "" for s in self.stop_strings):
            raise ValueError("stop strings must be non-empty")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


def sample_next(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """One token per row of ``logits`` [rows, vocab]: greedy rows by argmax in one op, the rest per row."""
    chosen = torch.argmax(logits, dim=-1)
    sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
    for i in sampled_rows:
        chosen[i] = _draw(logits[i].float(), params[i], generators[i])
    return chosen.tolist()


def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]
