"""What `sim.replay.replay` checks of its arguments before a run opens."""

from __future__ import annotations

from typing import Any

from controlplane.errors import did_you_mean
from sim.traces import FORMATS

__all__ = ["check_trace_arguments"]


def check_trace_arguments(trace: Any, trace_format: str | None) -> None:
    """A ``ValueError`` for a ``trace_format`` that is not a format (a stream's was stored in the run row as
    given)."""
    if trace_format is not None and trace_format not in FORMATS:
        raise ValueError(f"unknown trace format {trace_format!r}{did_you_mean(str(trace_format), FORMATS)}; "
                         f"valid formats: {', '.join(FORMATS)}")
