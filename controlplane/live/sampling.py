"""Per-request sampling and stop conditions.

Each sampled request draws from its own generator (`RequestDraws`) so that a seeded request
reproduces its output whatever else shares the batch, and nothing touches the process-global RNG.
Output token ``i`` is drawn from a generator seeded from ``(seed, i)`` alone, so a request computed
again (after a preemption, or on another worker after a failure) draws what it would have drawn.
"""

from __future__ import annotations

import hashlib
import math
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
    # The output tokens the request generated before it was registered this time (computed again
    # after a preemption, or on another worker): its first draw is output token ``first_token_index``.
    first_token_index: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError("temperature must be a finite number >= 0")
        if not 0 < self.top_p <= 1:  # NaN fails this too
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.first_token_index < 0:
            raise ValueError("first_token_index must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_generator(self, device: torch.device) -> RequestDraws | None:
        """The request's private RNG (None for greedy requests, which draw nothing)."""
        if self.greedy:
            return None
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return RequestDraws(seed, device, self.first_token_index)


class RequestDraws:
    """One request's draws: output token ``i`` comes from a generator seeded from ``(seed, i)``, so
    a draw depends on the seed, the token's index and the logits only, not on how many draws this
    object made before (a request registered again starts at the index it had reached)."""

    def __init__(self, seed: int, device: torch.device | str, first_token_index: int = 0) -> None:
        self.seed = int(seed)
        self.index = int(first_token_index)  # the output token the next draw is for
        self._gen = torch.Generator(device=device)

    def next_generator(self) -> torch.Generator:
        """The generator for the next output token (seeded afresh); the index moves on by one."""
        self._gen.manual_seed(draw_seed(self.seed, self.index))
        self.index += 1
        return self._gen


def draw_seed(seed: int, index: int) -> int:
    """The seed of output token ``index``'s draw: a 63-bit hash of (seed, index), the same in every
    process and on every device."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


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
    logits: torch.Tensor, params: list[SamplingParams], generators: list[RequestDraws | torch.Generator | None]
) -> list[int]:
    """One token per row of ``logits`` [rows, vocab]: greedy rows by argmax in one op, the rest per row.
    Raises ValueError when a row cannot be sampled (see `sample_rows`)."""
    tokens, errors = sample_rows(logits, params, generators)
    if errors:
        raise ValueError(f"row {min(errors)}: {errors[min(errors)]}")
    return tokens


def sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[RequestDraws | torch.Generator | None]
) -> tuple[list[int], dict[int, str]]:
    """One token per row of ``logits``, and why each row that could not be sampled failed (its
    token is then -1): non-finite logits (NaN, +inf, all -inf) or a draw that raised. One bad row
    never costs the others their token. Each sampled row's generator moves on to its next token."""
    chosen = torch.argmax(logits, dim=-1)
    broken = torch.isnan(logits).any(dim=-1) | torch.isposinf(logits).any(dim=-1) | torch.isneginf(logits).all(dim=-1)
    errors: dict[int, str] = {}
    for i in torch.nonzero(broken).flatten().tolist():
        errors[i] = "the model produced non-finite logits for this request"
    for i, p in enumerate(params):
        if p.greedy:
            continue
        gen = generators[i]
        if isinstance(gen, RequestDraws):
            gen = gen.next_generator()  # (a plain torch.Generator is used as it is)
        if i in errors:
            continue
        try:
            chosen[i] = _draw(logits[i].float(), p, gen)
        except (RuntimeError, ValueError) as exc:  # e.g. "probability tensor contains inf/nan"
            errors[i] = f"sampling failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    tokens = chosen.tolist()
    for i in errors:
        tokens[i] = -1
    return tokens, errors


def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    if not (math.isfinite(params.temperature) and params.temperature > 0):
        raise ValueError(f"temperature {params.temperature} is not a finite positive number")
    scaled = logits / params.temperature
    if not torch.isfinite(scaled.max()):  # a tiny temperature overflowed: that is greedy
        return torch.argmax(logits)
    logits = scaled
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
