"""The live iterations of a calibration as a rich table, by kind and batch size."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from controlplane.live.iteration_samples import IterationSample, iteration_kind, with_handoffs_once

__all__ = ["samples_table"]


def samples_table(samples: Sequence[IterationSample], title: str) -> Any:
    """Live iterations by batch size: backend time, effective time and the overhead between them (ms)."""
    from rich.table import Table

    by: dict[str, list[IterationSample]] = {}
    for s in with_handoffs_once(samples):
        by.setdefault(f"{iteration_kind(s.row)} x{s.num_seqs}", []).append(s)
    t = Table(title=title, header_style="bold")
    for col in ("iterations", "n", "backend p50", "effective p50", "overhead p50", "hand-off p50"):
        t.add_column(col, justify="left" if col == "iterations" else "right")
    for key in sorted(by, key=lambda k: (k.split()[0], int(k.split("x")[1]))):
        xs = by[key]
        t.add_row(key, str(len(xs)), f"{statistics.median(s.backend_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.effective_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.effective_s - s.backend_s for s in xs) * 1e3:.2f} ms",
                  f"{statistics.median(s.handoff_s or 0.0 for s in xs) * 1e3:.2f} ms")
    return t
