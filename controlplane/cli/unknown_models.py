"""The ``warning:`` line of a replay (`controlplane sim replay`, `controlplane live-replay`) whose trace names models
its config does not serve.

In the simulator the core rejects such a request at its arrival (``unknown model: no deployment serves 'default'
(served: tiny-llama)``), and the run was stored as any other: a trace exported from a run of another model, replayed
with a config serving ``tiny-llama``, gave 300 of 300 requests rejected and a summary table, without a word on
stderr. The run's summary counts them by the model they named (``unknown_models``, `controlplane.metrics.RunStats`);
`unknown_models_warning` says how many, which models, and which ones the config serves. A live replay submits such a
request to the config's first model instead (a trace's model names are another cluster's: `controlplane.live.
trace_replay`), which `served_by_first_warning` says before the run. (The daemon answers such a request 404.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["served_by_first_warning", "unknown_models_warning"]

#: Models the line names, most requests first; the rest are counted.
NAMED = 5


def _named(counts: dict[str, int]) -> tuple[str, int]:
    """(the models, most requests first, each with its count, past `NAMED` counted; how many models)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    named = ", ".join(f"{model!r} ({n:,})" for model, n in ranked[:NAMED])
    return (named + (f" and {len(ranked) - NAMED} more" if len(ranked) > NAMED else "")), len(ranked)


def unknown_models_warning(summary: dict[str, Any], served: Iterable[str]) -> str:
    """The warning (without its ``warning:``) for the requests ``summary``'s run rejected for a model none of the
    ``served`` models is; '' where none was."""
    counts: dict[str, int] = summary.get("unknown_models") or {}
    if not counts:
        return ""
    rejected = sum(counts.values())
    total = summary.get("num_requests")
    of = f" of {total:,}" if isinstance(total, int) else ""
    named, models = _named(counts)
    them = "it" if models == 1 else "them"
    return (f"{rejected:,}{of} requests rejected for an unknown model, one no deployment serves: {named} (served: "
            f"{', '.join(served)}); serve {them} in the config's cluster.models, or replay a trace whose model "
            "column names a served model (a request naming none goes to the first)")


def served_by_first_warning(requests: Iterable[Any], served: list[str]) -> str:
    """The warning (without its ``warning:``) for a live replay's ``requests`` (trace requests) naming a model none
    of the ``served`` models is: the live replay serves them with the first, where `sim replay` rejects them;
    '' where none does."""
    counts: Counter[str] = Counter()
    total = 0
    for r in requests:
        total += 1
        if r.model is not None and r.model not in served:
            counts[r.model] += 1
    if not counts:
        return ""
    named, models = _named(dict(counts))
    return (f"{sum(counts.values()):,} of {total:,} requests name {'a model' if models == 1 else 'models'} the config "
            f"does not serve: {named} (served: {', '.join(served)}); a live replay serves them with the first, "
            f"{served[0]} (`sim replay` rejects them as unknown models)")
