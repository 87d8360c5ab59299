"""The live backend against a grid profile of the same worker: how much slower it ran, by kind of iteration.

The grid (``controlplane profile``) times uniform batches on an idle engine; live batches mix
lengths (padding masks), merge and compact their KV cache as requests come and go, and share
the machine with the driver. The grid's measured latency model is the yardstick: it prices each
live iteration's shape, and the ratio of the live backend's time to that price is the live
slowdown (`live_slowdowns`), which also serves as a measure of the machine's pace in a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.live.calibration import aggregate_rows
from controlplane.live.iteration_samples import IterationSample, iteration_kind
from sim.latency.base import IterationShape, LatencyModel

__all__ = ["BUSY_BINS", "grid_model", "live_slowdown", "live_slowdowns", "pace_by_busy", "predict_row"]

#: `pace_by_busy`'s bins of the worker's busy fraction in a window: name -> [low, high).
BUSY_BINS = {"under_40pct": (0.0, 0.4), "40_80pct": (0.4, 0.8), "over_80pct": (0.8, float("inf"))}


def grid_model(grid_rows: Sequence[Mapping[str, Any]], grid_meta: Mapping[str, Any]) -> LatencyModel:
    """The measured latency model fitted on a grid profile's mean rows."""
    from sim.latency.measured import MeasuredProfileModel

    return MeasuredProfileModel.fit(aggregate_rows(grid_rows), grid_meta)


def predict_row(model: LatencyModel, row: Mapping[str, Any]) -> float:
    """The model's time for a live row's shape, at its padded sizes (uniform members of the padded width)."""
    n, nd = int(row["num_prefill_seqs"]), int(row["num_decode_seqs"])
    width = row.get("padded_prefill_tokens", row["num_prefill_tokens"]) / n if n else 0
    ctx = row.get("padded_decode_context", row["sum_decode_context"]) / nd if nd else 0
    return model.iteration_s(IterationShape([width] * n, [0] * n, [ctx] * nd))


def live_slowdowns(grid_rows: Sequence[Mapping[str, Any]], grid_meta: Mapping[str, Any],
                   samples: Sequence[IterationSample]) -> dict[str, float]:
    """How much slower the live backend ran than the grid profile predicts for the same shapes.

    Sum of live backend time over sum of predicted, for iterations that prefill (``prefill``),
    that only decode (``decode``), and all of them (``all``). A kind the run never ran takes the
    overall ratio; a kind it ran that the grid prices at 0 s (no rows of it, all-zero times) is a ValueError.
    """
    model = grid_model(grid_rows, grid_meta)
    predicted: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    actual: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    for s in samples:
        kind = iteration_kind(s.row)
        predicted[kind] += predict_row(model, s.row)
        actual[kind] += s.backend_s
    total_p, total_a = sum(predicted.values()), sum(actual.values())
    unpriced = [k for k in predicted if actual[k] > 0 and predicted[k] <= 0]
    if unpriced or total_p <= 0:  # (it said 1.00x: a ratio to nothing)
        name = grid_meta.get("path") or "the grid profile"
        raise ValueError(f"{name} prices the run's {' and '.join(unpriced) or 'iterations'} at 0 s: nothing to "
                         "compare the live backend with (profile a grid with both prefills and decodes)")
    overall = total_a / total_p
    out = {k: actual[k] / predicted[k] if predicted[k] > 0 else overall for k in predicted}
    out["all"] = overall
    return out


def live_slowdown(grid_rows: Sequence[Mapping[str, Any]], grid_meta: Mapping[str, Any],
                  samples: Sequence[IterationSample]) -> float:
    """The overall live backend / grid profile ratio (see `live_slowdowns`): the machine's pace in a run."""
    return live_slowdowns(grid_rows, grid_meta, samples)["all"]


def pace_by_busy(model: LatencyModel, runs: Sequence[Sequence[IterationSample]], *, window_s: float = 5.0,
                 min_iterations: int = 20) -> dict[str, Any]:
    """The live backend's pace against how busy the worker was: each run cut into ``window_s`` windows
    (its last, partial one dropped; windows of fewer than ``min_iterations`` iterations too), each
    window's backend time over ``model``'s price for its shapes, binned by the window's busy fraction
    (backend time / ``window_s``, `BUSY_BINS`): per bin the windows and the median ratio, and the
    correlation of busy fraction and ratio over all windows. A latency model prices an iteration by
    its shape alone; if a worker that idles between requests runs slower than a saturated one (seen
    on a shared host, docs/history/calibration.md, eleventh session), the medians differ by bin."""
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    points: list[tuple[float, float]] = []
    for samples in runs:
        if not samples:
            continue
        t0 = samples[0].start_s
        windows: dict[int, list[float]] = {}
        for s in samples:
            w = windows.setdefault(int((s.start_s - t0) // window_s), [0.0, 0.0, 0])
            w[0] += s.backend_s
            w[1] += predict_row(model, s.row)
            w[2] += 1
        last = max(windows)
        points += [(b / window_s, b / p) for k, (b, p, n) in windows.items() if k != last and n >= min_iterations and p > 0]
    out: dict[str, Any] = {}
    for name, (low, high) in BUSY_BINS.items():
        ratios = sorted(r for busy, r in points if low <= busy < high)
        out[name] = {"windows": len(ratios), "median": _median(ratios)}
    out["correlation"] = _correlation(points)
    return out


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _correlation(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxy = sum((x - mx) * (y - my) for x, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    syy = sum((y - my) ** 2 for _, y in points)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None
