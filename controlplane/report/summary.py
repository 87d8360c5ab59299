"""A run's summary as a report shows it: the rows `runs show` prints (its labels, its number format), the
per-model figures and the GPU time by GPU type as tables of their own, and every other key of the summary
(plugin figures) a row each, nested values flattened to ``key.sub`` rather than a JSON blob in one cell."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.cli.common import fmt_value
from controlplane.cli.summary_table import (BY_MODEL_COLUMNS, end_label, guardian_rows, reason_rows, shown_value,
                                            slo_targets_text, summary_rows)
from controlplane.report.cost import gpu_price

__all__ = ["by_gpu_table", "by_model_table", "other_rows", "shown_rows"]

#: Summary keys `shown_rows` and the tables below show, besides the labelled ones of `summary_rows`.
_SHOWN = {"by_model", "gpu_seconds_by_gpu", "guardians", "guardian_sampling", "reject_reasons", "slo_targets",
          "cost_error", "guardian_cost_error"}


def shown_rows(summary: Mapping[str, Any], mode: str | None = None) -> list[list[str]]:
    """[label, value] rows of ``summary`` as `runs show`'s table has them (`summary_table.summary_table`)."""
    rows = []
    for key, label in summary_rows():
        if key not in summary:
            continue
        if key == "slo_attainment" and summary.get("slo_targets"):
            label += f" ({slo_targets_text(summary['slo_targets'])})"
        elif key == "sim_end_s":
            label = end_label(mode)
        rows.append([_indented(label), fmt_value(shown_value(dict(summary), key))])
    rows += [[label, fmt_value(value)] for label, (value,) in guardian_rows(dict(summary))]
    for key, label in (("cost_error", "cost not known"), ("guardian_cost_error", "guardian cost not known")):
        if summary.get(key):
            rows.append([label, str(summary[key])])
    rows += [[_indented(f"  not completed: {label}"), str(n)]
             for label, n in reason_rows(summary.get("reject_reasons") or {}, summary.get("run_id"))]
    return rows


def _indented(label: str) -> str:
    """A row under the one above (``  at most ...``): its indent kept, which HTML would collapse."""
    stripped = label.lstrip(" ")
    return "\u00a0" * (len(label) - len(stripped)) + stripped


def other_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """[key, value] rows of the summary's other keys (plugin figures, means, token counts), nested dicts
    flattened to ``key.sub`` and lists of plain values joined; none that `shown_rows` or the tables show."""
    labelled = {k for k, _ in summary_rows()} | _SHOWN
    rows: list[list[str]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                add(f"{key}.{k}", v)
        elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            rows.append([key, ", ".join(fmt_value(v) for v in value) or "-"])
        elif isinstance(value, (dict, list)):  # (an empty dict; a list of dicts or lists)
            rows.append([key, json.dumps(value, sort_keys=True, default=str) if value else "-"])
        else:
            rows.append([key, fmt_value(value)])

    for key, value in summary.items():
        if key not in labelled:
            add(key, value)
    return rows


def by_model_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """(headers, rows) of a run of several models, a row per model as `runs show`'s "by model"; None for one model."""
    by_model = summary.get("by_model")
    if not by_model:
        return None
    return (["model", *(heading for _, heading in BY_MODEL_COLUMNS)],
            [[model, *(fmt_value(entry.get(key)) for key, _ in BY_MODEL_COLUMNS)] for model, entry in by_model.items()])


def by_gpu_table(summary: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """(headers, rows) of the GPU-seconds held by GPU type: GPU-hours, the run config's price per GPU-hour
    and their cost (``-`` for a GPU without a price); None when the summary has no ``gpu_seconds_by_gpu``."""
    by_gpu = summary.get("gpu_seconds_by_gpu")
    if not by_gpu:
        return None
    rows = []
    for gpu, seconds in by_gpu.items():
        price = gpu_price(config, gpu)
        rows.append([gpu, fmt_value(float(seconds)), fmt_value(float(seconds) / 3600.0), fmt_value(price),
                     fmt_value(None if price is None else float(seconds) / 3600.0 * price)])
    return ["GPU type", "GPU-seconds", "GPU-hours", "price (USD per GPU-hour)", "cost (USD)"], rows
