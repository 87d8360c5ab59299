"""The measured model's relative-error fit on noisy timings: unbiased in total, as the timings are."""

from __future__ import annotations

import numpy as np
import pytest

from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel


def _noisy_rows(sigma: float, seed: int = 0) -> tuple[list[dict], float]:
    """Decode and prefill timings of a known linear cost times mean-one log-normal noise (a shared host)."""
    rng = np.random.default_rng(seed)
    rows, true_total = [], 0.0
    for _ in range(6):
        for n in (1, 2, 4, 8, 16, 32, 64):
            ctx = 200 * n
            t = 0.004 + 0.0002 * n + 1e-6 * ctx
            rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n,
                         "sum_decode_context": ctx, "sum_prefill_context": 0,
                         "iteration_s": t * float(np.exp(sigma * rng.standard_normal() - sigma**2 / 2))})
            true_total += t
        for tokens in (16, 64, 128, 256):
            t = 0.006 + 1e-4 * tokens
            rows.append({"num_prefill_tokens": tokens, "num_prefill_seqs": 1, "num_decode_seqs": 0,
                         "sum_decode_context": 0, "sum_prefill_context": 0,
                         "iteration_s": t * float(np.exp(sigma * rng.standard_normal() - sigma**2 / 2))})
            true_total += t
    return rows, true_total


def _predicted_total(model: MeasuredProfileModel, rows: list[dict]) -> float:
    return sum(model.iteration_s(IterationShape([r["num_prefill_tokens"]] * r["num_prefill_seqs"],
                                                [0] * r["num_prefill_seqs"],
                                                [r["sum_decode_context"] / max(1, r["num_decode_seqs"])]
                                                * r["num_decode_seqs"])) for r in rows)


def _mean_ratio(seeds: range) -> float:
    """Predicted over measured total time of the fitted rows, averaged over noise draws."""
    out = []
    for seed in seeds:
        rows, _ = _noisy_rows(0.4, seed)
        out.append(_predicted_total(MeasuredProfileModel.fit(rows), rows) / sum(r["iteration_s"] for r in rows))
    return float(np.mean(out))


def test_fit_on_noisy_timings_reproduces_their_total():
    """A profile fitted on a run's iterations prices them at what they took, noisy or not (within 3%)."""
    assert 0.97 < _mean_ratio(range(10)) < 1.03


def test_first_pass_alone_is_biased_low(monkeypatch):
    """What the reweighting corrects: weighing rows by their measured time prices noisy timings low."""
    import sim.latency.measured as measured

    fixed = _mean_ratio(range(10))
    monkeypatch.setattr(measured, "REWEIGHT_ROUNDS", 0)
    low = _mean_ratio(range(10))
    assert low < 0.96 and fixed - low > 0.04, (low, fixed)


def test_exact_timings_are_fitted_exactly():
    rows, true_total = _noisy_rows(0.0)
    assert _predicted_total(MeasuredProfileModel.fit(rows), rows) == pytest.approx(true_total, rel=1e-3)


def test_a_profile_too_small_to_fit_is_refused_naming_its_file(tmp_path):
    # "cluster.models[default].latency: need at least 3 rows to fit, got 1" named no file
    import re

    from sim.latency.measured import write_profile

    row = {"num_prefill_tokens": 64, "num_prefill_seqs": 1, "num_decode_seqs": 2, "sum_decode_context": 300,
           "sum_prefill_context": 0, "iteration_s": 0.02}  # a mixed row: both kinds timed
    path = write_profile(tmp_path / "one.json", [row], {"model": "m", "device": "cpu"})
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: need at least 3 rows to fit, got 1")):
        MeasuredProfileModel.from_file(path)
