"""sim.calibration.pace_by_busy: the live backend's pace against the worker's busy fraction."""

from __future__ import annotations

import pytest

from controlplane.live.iteration_samples import IterationSample
from sim.calibration import BUSY_BINS, pace_by_busy
from sim.latency.linear import LinearLatencyModel


def _row(d: int, t: float) -> dict:
    return {"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": d, "sum_decode_context": 10 * d,
            "sum_prefill_context": 0, "iteration_s": t}


def _run(price: float, slow: float, gap: float, seconds: float) -> list[IterationSample]:
    """Back-to-back iterations of one shape taking ``slow`` x its price, ``gap`` idle after each."""
    out, t, k = [], 0.0, 0
    while t < seconds:
        took = slow * price
        out.append(IterationSample("w", k, t, t + took, _row(2, took)))
        t += took + gap
        k += 1
    return out


def test_an_idle_worker_that_runs_slower_shows_in_the_low_busy_bin():
    from sim.latency.base import IterationShape

    model = LinearLatencyModel()
    price = model.iteration_s(IterationShape((), (), [10, 10]))
    busy = _run(price, 1.0, 0.0, 20.0)  # saturated, at the model's price
    idle = _run(price, 1.25, 9 * price, 20.0)  # ~10% busy, 25% slower
    got = pace_by_busy(model, [busy, idle, []], window_s=5.0, min_iterations=5)
    assert set(BUSY_BINS) <= set(got)
    assert got["over_80pct"]["windows"] == 3 and got["over_80pct"]["median"] == pytest.approx(1.0)  # last window dropped
    assert got["under_40pct"]["windows"] == 3 and got["under_40pct"]["median"] == pytest.approx(1.25)
    assert got["40_80pct"] == {"windows": 0, "median": None}
    assert got["correlation"] == pytest.approx(-1.0)
    assert pace_by_busy(model, [])["correlation"] is None
    with pytest.raises(ValueError, match="window_s"):
        pace_by_busy(model, [busy], window_s=0)
