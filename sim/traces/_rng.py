"""The one rule for randomness in trace handling: a caller-seeded numpy Generator, never globals.

A reader or transform that needs randomness refuses to run without `rng`, instead of silently
seeding itself: an experiment's seed must reach every random choice, or seed sweeps would
replay the same trace and understate variance.
"""

from __future__ import annotations

import numpy as np


def require_rng(rng: object, what: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"{what} is random and needs rng=numpy.random.default_rng(seed)")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{what}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng
