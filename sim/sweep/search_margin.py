"""A search winner's attainment over its confirmation seeds, and whether its margin over the target is noise.

A winner must meet the target on every confirmation seed, but a winner whose seeds all land a hair above the target
will miss it on many other seeds (other days of the same traffic): of 20 seeds of a winner confirmed at 0.925 against
a target of 0.92, 4 missed. So the search reports the spread of the confirmation (mean, minimum, standard deviation)
and the margin, ``mean - target``, and warns when that margin is under ``NOISE_SDS`` (2) times the noise:

    noise = max(SD of the attainment over the confirmation seeds (0 with one seed),
                sqrt(mean * (1 - mean) / requests))

The second term is the binomial standard error of a share of ``requests`` requests: the spread chance alone gives
a replay of that many requests. It keeps the rule meaningful where the seeds vary nothing (their SD is 0: a trace
replayed as it is, plugins that draw nothing) and where two or three seeds happen to agree more than seeds do. With
the noise roughly normal, a margin under two of it leaves a fresh seed a chance of missing the target above 2%.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

__all__ = ["NOISE_SDS", "confirm_spread", "margin_warning"]

#: A margin under this many times the noise is within it (`confirm_spread`).
NOISE_SDS = 2.0


def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def confirm_spread(by_seed: Mapping[int, float], target: float, requests: float) -> dict[str, object]:
    """The attainment over the confirmation seeds (``by_seed``, not empty): ``attainment_mean``, ``attainment_min``,
    ``attainment_sd`` (None with one seed), ``margin`` (mean - target), ``margin_noise`` (the module doc's noise,
    for a trace of ``requests`` requests) and ``margin_within_noise`` (margin < NOISE_SDS x noise)."""
    values = list(by_seed.values())
    mean = sum(values) / len(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    binomial = math.sqrt(max(mean * (1 - mean), 0.0) / requests) if requests > 0 else 0.0
    noise = max(sd or 0.0, binomial)
    margin = mean - target
    return {"attainment_mean": _r(mean), "attainment_min": _r(min(values)), "attainment_sd": _r(sd),
            "margin": _r(margin), "margin_noise": _r(noise), "margin_within_noise": margin < NOISE_SDS * noise}


def margin_warning(best: Mapping[str, object], target: float) -> str | None:
    """The warning a winner whose margin is within the noise gets (`confirm_spread`'s fields in ``best``); None else."""
    if not best.get("margin_within_noise"):
        return None
    seeds = [int(s) for s in best.get("attainment_by_seed") or {}]
    sd = best.get("attainment_sd")
    spread = f"min {best['attainment_min']:.4g}" + (f", SD {sd:.2g}" if sd is not None else ", one seed: no SD")
    return (f"the winner's margin over the target is within seed noise: its attainment over confirm seeds {seeds} is "
            f"{best['attainment_mean']:.4g} on average ({spread}), {best['margin']:.2g} above {target}, under "
            f"{NOISE_SDS:g} x {best['margin_noise']:.2g} (the larger of that SD and the binomial error of "
            f"the trace's requests); other "
            "seeds (other days of this traffic) may well miss the target: confirm on more seeds (search.confirm_seeds), "
            "or take the next candidate up")
