"""What `sim.replay.replay` checks of its arguments before a run opens, and says when a run replayed nothing
(what ``controlplane sim replay`` says in its own words, naming its options)."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

from controlplane.errors import did_you_mean
from sim.traces import FORMATS
from sim.traces.bundled import BUNDLED, bundled_trace
from sim.traces.transforms import TransformValueError

__all__ = ["BUNDLED", "NOTHING_REPLAYED", "bundled_trace", "checked_trace_arguments", "library_names",
           "warn_nothing_replayed"]

#: The logger of `warn_nothing_replayed`.
NOTHING_REPLAYED = logging.getLogger("sim.replay.nothing_replayed")

#: A transform's keyword (`TransformValueError`) as `sim.replay.TraceTransforms` names it.
_TRANSFORM_FIELDS = {"start_s": "window_start_s", "end_s": "window_end_s"}


def checked_trace_arguments(trace: Any, trace_format: str | None, transforms: Any) -> Any:
    """``trace``, a bundled trace's name (``bundled:azure_code``, as ``controlplane sim replay`` takes it) made
    its file's path (`bundled_trace`). A ``ValueError`` for a ``trace_format`` that is not a format (a stream's
    was stored in the run row as given) and for a generator read to its end already (a second replay of it
    replayed nothing, silently); a ``TypeError`` for ``transforms`` that are not a ``TraceTransforms`` (a dict
    failed mid-replay: "'dict' object has no attribute 'apply'")."""
    if trace_format is not None and trace_format not in FORMATS:
        raise ValueError(f"unknown trace format {trace_format!r}{did_you_mean(str(trace_format), FORMATS)}; "
                         f"valid formats: {', '.join(FORMATS)}")
    if inspect.isgenerator(trace) and inspect.getgeneratorstate(trace) == inspect.GEN_CLOSED:
        raise ValueError("the trace is a generator that was read to its end already (by an earlier replay?): a "
                         "generator gives its requests once; pass a list to replay the same requests again, or make "
                         "a new generator")
    from sim.replay import TraceTransforms  # (here: sim.replay imports this module)

    if transforms is not None and not isinstance(transforms, TraceTransforms):
        hint = " (a dict of its fields: TraceTransforms(**transforms))" if isinstance(transforms, Mapping) else ""
        raise TypeError(f"transforms must be a sim.replay.TraceTransforms, e.g. TraceTransforms(speed_up=2, "
                        f"limit=500), or None; got {type(transforms).__name__}{hint}")
    return bundled_trace(trace)


def library_names(exc: TransformValueError) -> TransformValueError:
    """``exc`` saying each argument by its `TraceTransforms` field (``window_end_s``, not the window's ``end_s``);
    its template is kept, for those that name them otherwise (the command line's options, a sweep spec's keys)."""
    exc.args = (exc.named(_TRANSFORM_FIELDS),)
    return exc


def warn_nothing_replayed(summary: dict[str, Any], trace_name: str | None) -> None:
    """A warning (`NOTHING_REPLAYED`) for a run that replayed no request."""
    if summary.get("num_requests") == 0:
        NOTHING_REPLAYED.warning(
            "no request was replayed%s (run %s): the trace gave none, or its requests all fell outside the "
            "window (TraceTransforms window_start_s / window_end_s), or limit, rate_scale, rate_profile or "
            "sim.until_s left none", f" from {trace_name}" if trace_name else "", summary.get("run_id"))
