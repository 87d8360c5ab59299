"""Where a slice's error comes from, computed after the fact on the evaluated runs' own iterations.

* Latency model: the profile the round was simulated on, asked for the time of each iteration
  the live worker actually ran (same shapes), against what it took (as the control plane saw
  it: backend + live path + hand-off). ``iteration_err_pct`` is (predicted - measured) / measured
  over the run's iterations, summed.
* Scheduling: the same simulation on a profile refitted on the evaluated run's own iterations
  (its iteration times, in-sample). What error is left is queueing and batching - the simulator's
  scheduling, not its latency model. The latency model's share is the rest: total - scheduling.
* Sensitivity: the same simulation with every iteration `SENSITIVITY_STEP` slower (`scaled_profile`):
  how much the p50s move for a per-iteration error that size. Near saturation it is large - on a
  run 95-100% busy (2026-12-03), 2% slower iterations moved the simulated E2E p90 by +17% and 5% by
  +42% - so a scheduling share there is to be read against it: a CPU worker's iterations are not
  timed more precisely than a few percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane.hardware.profile_format import read_profile, write_profile
from controlplane.live.iteration_samples import IterationSample, with_handoffs
from sim.calibration import calibrate, predict_row

#: The per-iteration slow-down the sensitivity is measured for (2%).
SENSITIVITY_STEP = 0.02


def iteration_error_pct(profile: Path, samples: Sequence[IterationSample]) -> float:
    """(predicted - measured) / measured in %, summed over the live iterations, on ``profile``'s model."""
    from sim.latency.measured import MeasuredProfileModel

    model = MeasuredProfileModel.from_file(profile)
    timed = with_handoffs(samples)
    predicted = sum(predict_row(model, s.row) for s in timed)
    measured = sum(s.effective_s for s in timed)
    return 100.0 * (predicted - measured) / measured if measured > 0 else float("nan")


#: Iteration buckets of `iteration_error_by_shape`: (kind, smallest batch) - a bucket runs to the next one's size.
SHAPE_BUCKETS = (("prefill", 1), ("prefill", 2), ("prefill", 4), ("prefill", 8), ("prefill", 16),
                 ("decode", 1), ("decode", 8), ("decode", 32), ("decode", 64))


def _bucket(row: dict[str, Any]) -> str:
    n, nd = int(row["num_prefill_seqs"]), int(row["num_decode_seqs"])
    kind, size = ("prefill", n) if n else ("decode", nd)
    sizes = [b for k, b in SHAPE_BUCKETS if k == kind]
    low = max(b for b in sizes if b <= max(size, 1))
    high = min((b for b in sizes if b > low), default=None)
    return f"{kind} {low}+" if high is None else (f"{kind} {low}" if high == low + 1 else f"{kind} {low}-{high - 1}")


def iteration_error_by_shape(profile: Path, samples: Sequence[IterationSample]) -> dict[str, dict[str, float]]:
    """`iteration_error_pct` by kind and batch size (`SHAPE_BUCKETS`; prefill buckets by prompts prefilled,
    mixed iterations with them): where a run's per-iteration error sits - whether the big padded batches
    a backlog builds are priced as the small ones are. Per bucket: iterations, share of the measured
    time, mean measured and predicted ms, error in %."""
    from sim.latency.measured import MeasuredProfileModel

    model = MeasuredProfileModel.from_file(profile)
    sums: dict[str, list[float]] = {}
    for s in with_handoffs(samples):
        b = sums.setdefault(_bucket(s.row), [0, 0.0, 0.0])
        b[0] += 1
        b[1] += s.effective_s
        b[2] += predict_row(model, s.row)
    total = sum(b[1] for b in sums.values()) or 1.0
    order = {f"{k} {b}": i for i, (k, b) in enumerate(SHAPE_BUCKETS)}
    out = {}
    for name in sorted(sums, key=lambda x: order.get(x.split("-")[0].rstrip("+"), 99)):
        n, measured, predicted = sums[name]
        out[name] = {"iterations": n, "time_share_pct": round(100 * measured / total, 1),
                     "measured_ms": round(1e3 * measured / n, 2), "predicted_ms": round(1e3 * predicted / n, 2),
                     "err_pct": round(100 * (predicted - measured) / measured, 1) if measured > 0 else None}
    return out


def refit_profile(samples: Sequence[IterationSample], output: Path, grid: tuple[list[dict], dict[str, Any]],
                  run_id: int | None) -> Path:
    """A profile fitted on the evaluated run's own iterations (in-sample: attribution only, never a prediction)."""
    return calibrate(list(samples), output, grid=grid, run_ids=[run_id]).path


def scaled_profile(profile: Path, factor: float, output: Path) -> Path:
    """``profile`` with every row's time multiplied by ``factor`` (a sensitivity check, never a prediction)."""
    rows, meta = read_profile(profile)
    return write_profile(output, [{**r, "iteration_s": r["iteration_s"] * factor} for r in rows],
                         {**meta, "source": f"{meta.get('source', profile)} x {factor:g} (sensitivity)"})
