"""A multi-tenant shared-prefix workload, like llm-d-benchmark's ``shared_prefix`` synthetic load.

Each of ``num_tenants`` tenants has a long system prompt (``system_prompt_tokens``) that every
one of its requests starts with, followed by a request-specific question
(``question_tokens``, uniform in a range); outputs are uniform in ``output_tokens``. Arrivals
are Poisson at ``qps``; a request's tenant is drawn uniformly, or Zipf-like with
``tenant_skew`` > 0 (tenant ``k`` has weight ``1 / (k+1)**skew``: a few hot tenants).

Prefix identity is given as block hashes (``hash_ids``, ``hash_block_tokens`` tokens per
block, as in the Mooncake trace): the system prompt's blocks hash the same for every request
of a tenant; the question's blocks are unique. Block ``i`` of tenant ``t``'s system prompt is
``t * 1_000_000 + i``; question blocks count up from ``10**12``.

    python -m sim.traces.shared_prefix OUT.jsonl [--requests 2000 --qps 20 --tenants 8 ...]

writes it as a canonical JSONL trace (``--format canonical``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from .record import TraceRequest


@dataclass(frozen=True)
class SharedPrefixWorkload:
    num_requests: int = 2000
    qps: float = 20.0
    num_tenants: int = 8
    system_prompt_tokens: int = 4096
    question_tokens: tuple[int, int] = (64, 512)
    output_tokens: tuple[int, int] = (32, 256)
    hash_block_tokens: int = 16
    tenant_skew: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_requests", "num_tenants", "system_prompt_tokens", "hash_block_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.qps > 0:
            raise ValueError(f"qps must be positive, got {self.qps}")
        for name in ("question_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be a range 1 <= low <= high, got ({lo}, {hi})")
        if self.tenant_skew < 0:
            raise ValueError(f"tenant_skew must be >= 0, got {self.tenant_skew}")


def shared_prefix_trace(workload: SharedPrefixWorkload | None = None, **kwargs) -> list[TraceRequest]:
    """The workload's requests in arrival order (deterministic for its seed)."""
    wl = workload if workload is not None else SharedPrefixWorkload(**kwargs)
    if workload is not None and kwargs:
        raise ValueError("give a workload or keyword settings, not both")
    rng = np.random.default_rng(wl.seed)
    n = wl.num_requests
    arrivals = np.cumsum(rng.exponential(1.0 / wl.qps, size=n))
    arrivals -= arrivals[0]
    weights = 1.0 / np.arange(1, wl.num_tenants + 1) ** wl.tenant_skew
    tenants = rng.choice(wl.num_tenants, size=n, p=weights / weights.sum())
    questions = rng.integers(wl.question_tokens[0], wl.question_tokens[1] + 1, size=n)
    outputs = rng.integers(wl.output_tokens[0], wl.output_tokens[1] + 1, size=n)
    bt = wl.hash_block_tokens
    sys_blocks = wl.system_prompt_tokens // bt  # whole blocks only: the last partial one mixes in the question
    next_unique = 10**12
    out = []
    for i in range(n):
        t = int(tenants[i])
        prompt = wl.system_prompt_tokens + int(questions[i])
        total_blocks = -(-prompt // bt)
        own = total_blocks - sys_blocks
        hashes = tuple(range(t * 1_000_000, t * 1_000_000 + sys_blocks)) + tuple(range(next_unique, next_unique + own))
        next_unique += own
        out.append(TraceRequest(
            request_id=str(i), arrival_s=float(arrivals[i]), prompt_tokens=prompt, output_tokens=int(outputs[i]),
            tenant=f"tenant-{t}", hash_ids=hashes, hash_block_tokens=bt,
        ))
    return out


def main(argv: list[str] | None = None) -> int:
    from .canonical import write_canonical

    d = SharedPrefixWorkload()
    ap = argparse.ArgumentParser(prog="python -m sim.traces.shared_prefix", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="canonical trace file to write (.jsonl or .csv; .gz, .bz2 or .xz added compresses it)")
    ap.add_argument("--requests", type=int, default=d.num_requests)
    ap.add_argument("--qps", type=float, default=d.qps)
    ap.add_argument("--tenants", type=int, default=d.num_tenants)
    ap.add_argument("--system-prompt-tokens", type=int, default=d.system_prompt_tokens)
    ap.add_argument("--block-tokens", type=int, default=d.hash_block_tokens)
    ap.add_argument("--skew", type=float, default=d.tenant_skew)
    ap.add_argument("--seed", type=int, default=d.seed)
    a = ap.parse_args(argv)
    try:
        wl = SharedPrefixWorkload(num_requests=a.requests, qps=a.qps, num_tenants=a.tenants,
                                  system_prompt_tokens=a.system_prompt_tokens, hash_block_tokens=a.block_tokens,
                                  tenant_skew=a.skew, seed=a.seed)
    except ValueError as exc:
        ap.error(str(exc))
    try:
        n = write_canonical(shared_prefix_trace(wl), a.out)
    except ValueError as exc:  # (a name of a compression it does not write: before any file is made)
        ap.error(str(exc))
    print(f"wrote {n} requests to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
