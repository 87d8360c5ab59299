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

__all__ = ["grid_model", "live_slowdown", "live_slowdowns", "predict_row"]


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
    overall ratio.
    """
    model = grid_model(grid_rows, grid_meta)
    predicted: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    actual: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
    for s in samples:
        kind = iteration_kind(s.row)
        predicted[kind] += predict_row(model, s.row)
        actual[kind] += s.backend_s
    total_p, total_a = sum(predicted.values()), sum(actual.values())
    overall = total_a / total_p if total_p > 0 else 1.0
    out = {k: actual[k] / predicted[k] if predicted[k] > 0 else overall for k in predicted}
    out["all"] = overall
    return out


def live_slowdown(grid_rows: Sequence[Mapping[str, Any]], grid_meta: Mapping[str, Any],
                  samples: Sequence[IterationSample]) -> float:
    """The overall live backend / grid profile ratio (see `live_slowdowns`): the machine's pace in a run."""
    return live_slowdowns(grid_rows, grid_meta, samples)["all"]
