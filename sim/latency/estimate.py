"""The run's latency models as the control plane's iteration estimate (`ScalingContext.iteration_s`):
what an SLO-driven planner asks "how long would an iteration of this batch take on one replica?"."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .base import IterationShape, LatencyModel

__all__ = ["iteration_estimator"]


def iteration_estimator(models: Mapping[str, LatencyModel]) -> Callable[..., float]:
    """``estimate(model, prefill_tokens, decode_seqs, decode_context_tokens, prefill_context_tokens=0) ->
    seconds`` from ``models`` (one latency model per deployed model): one prefill chunk of ``prefill_tokens``
    of a request already holding ``prefill_context_tokens`` in its KV (a later chunk of a chunked prefill
    attends over them), beside ``decode_seqs`` decodes each holding ``decode_context_tokens`` of KV
    (`controlplane.scaling.IterationEstimate`)."""
    # (a model that counts the iterations it prices, the measured one's profiled box, has an `estimate_s` that does
    # not: an estimate is not an iteration the run ran)
    prices = {name: m.estimate_s if hasattr(type(m), "estimate_s") else m.iteration_s for name, m in models.items()}

    def estimate(model: str, prefill_tokens: int, decode_seqs: int, decode_context_tokens: int,
                 prefill_context_tokens: int = 0) -> float:
        prefill = (int(prefill_tokens),) if prefill_tokens > 0 else ()
        shape = IterationShape(prefill_chunk_tokens=prefill,
                               prefill_context_tokens=(max(0, int(prefill_context_tokens)),) * len(prefill),
                               decode_context_tokens=(int(decode_context_tokens),) * max(0, int(decode_seqs)))
        return float(prices[model](shape)) if not shape.is_empty else 0.0

    return estimate
