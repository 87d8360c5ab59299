"""The simulator's ground truth for guardians: which requests are harmful, and what score a
simulated guardian gives them.

* **Label** (synthetic): a request is harmful with probability ``sim.guardian_block_rate`` (per
  tenant: ``sim.guardian_tenant_block_rates``), drawn once per text: the prompt text when the
  trace has one (the same prompt is always harmful or always not for a tenant), else the request
  id. With tenant rates one draw per text is compared with each tenant's rate, so a prompt can be
  harmful for one tenant and not another (a tenant's own content policy); response caches key
  answers on the text, so one that passed for a tenant is served to another unchecked (the run
  warns of it, `sim.guardian_pool`), while the guardian planners' verdict cache keys its verdicts
  by tenant then (`plugins.guardian_planner`). Only the
  simulator (and a benchmark scoring the run) reads it; no policy sees it.
* **Score** of a ``simulated`` guardian: ``sigmoid(separation * (label - 0.5) + noise * z)``,
  with ``z`` a standard normal fixed per (guardian, stage, text), so the same text always gets
  the same score. ``noise = 0`` is a perfect guardian; a cheap screen is a small separation or a
  large noise: informative but noisy.

Every draw is a hash of (seed, what is drawn, the text): the same in every variant of a run, and
independent of the order requests arrive in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

__all__ = ["LabelModel"]

_NORMAL = NormalDist()


def fixed_uniform(*parts: object) -> float:
    """A uniform (0, 1) number fixed by ``parts``."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


class LabelModel:
    def __init__(self, rate: float, tenant_rates: Mapping[str, float] | None = None, seed: int = 0) -> None:
        self.rate = rate
        self.tenant_rates = dict(tenant_rates or {})
        self.seed = seed
        bad = {t: r for t, r in self.tenant_rates.items() if not 0 <= r <= 1}
        if bad:
            raise ValueError(f"sim.guardian_tenant_block_rates: rates must be within 0..1, got {bad}")

    @staticmethod
    def text_id(request: Any) -> str:
        return f"p:{request.prompt}" if request.prompt is not None else f"r:{request.request_id}"

    def is_harmful(self, request: Any) -> bool:
        rate = self.tenant_rates.get(request.tenant or "", self.rate)
        return rate > 0 and fixed_uniform(self.seed, "label", self.text_id(request)) < rate

    def score(self, guardian: str, stage: str, request: Any, separation: float, noise: float) -> float:
        label = 1.0 if self.is_harmful(request) else 0.0
        z = _NORMAL.inv_cdf(fixed_uniform(self.seed, "score", guardian, stage, self.text_id(request))) if noise else 0.0
        x = separation * (label - 0.5) + noise * z
        return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0
