"""A sweep spec's trace reader options, checked when the spec loads.

A reader option's value (Vidur's ``qps: 0``) was checked only when the sweep read its traces, after its
sweep row was stored: :func:`check_trace_options` opens the spec's trace with its options when the spec
loads (the readers check their options before reading a row), naming the option (``trace.options.qps
must be a finite number > 0, got 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.errors import ConfigError

if TYPE_CHECKING:
    from sim.sweep.spec import LoadedSpec

__all__ = ["check_trace_options"]


def check_trace_options(loaded: LoadedSpec, where: str) -> None:
    """Refuse (`ConfigError`) reader options the spec's trace format refuses, naming the option
    (``<spec>: trace.options.qps must be a finite number > 0, got 0``): the trace is opened with them
    and closed before any row is read. Without ``format`` the format is detected from the file (a file
    that is not there, or whose format is not detected, is refused where the sweep reads it)."""
    import numpy as np

    from sim.traces import detect_format, read_trace

    options = loaded.spec.trace.options
    path, fmt = loaded.trace_path(), loaded.trace_format()
    if not options or not Path(path).is_file():
        return
    try:
        fmt = fmt or detect_format(path)
    except (ValueError, OSError):
        return

    def refused(given: Mapping[str, Any]) -> ValueError | None:
        try:
            read_trace(path, fmt, rng=lambda: np.random.default_rng(0), **given).close()
        except ValueError as exc:  # (a reader's option check, or a file of the other kind: TraceFormatError)
            return exc
        return None

    if (error := refused(options)) is None:
        return
    if (unread := refused({})) is not None:  # (not the options: a file of the other kind than its format)
        raise ConfigError(f"{where}: trace: {unread}") from None
    for name, value in options.items():  # (the option refused alone, named; else the options together)
        if (alone := refused({name: value})) is not None:
            msg = str(alone)
            text = f"trace.options.{msg}" if msg.startswith(f"{name} ") else f"trace.options.{name}: {msg}"
            raise ConfigError(f"{where}: {text}") from None
    raise ConfigError(f"{where}: trace.options: {error}") from None
