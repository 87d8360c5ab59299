"""`controlplane sim replay`'s progress bar on stderr (a terminal): arrivals against the trace's rows where a count
of them tells the total, then "draining" once the last request has arrived."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from controlplane.cli import common

__all__ = ["count_rows", "progress_bar", "progress_total"]

#: The extensions of a JSON Lines trace (one request a line, no header), as the readers take them.
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: Format options that leave rows out (BurstGPT's filters, a skipped bad row): with one, the requests
#: are fewer than the rows by a number no count of lines tells.
_FILTERS = ("models", "log_types")


def count_rows(path: Path, limit_bytes: int = 256 << 20) -> int | None:
    """Data rows in a trace file, for the progress bar: its non-blank lines, less a CSV's header
    (a JSON Lines file, by its extension in any case or its first line's ``{``, has none); a CSV
    holding a quote counted by the csv module, as its reader reads it (a quoted field may span
    lines). None where counting would cost a read of its own (large or compressed files)."""
    try:
        if path.suffix.lower() in (".gz", ".bz2", ".xz", ".zst", ".zip") or path.stat().st_size > limit_bytes:
            return None
        lines, quoted, first = 0, False, None
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    lines += 1
                    if first is None:
                        first = line.lstrip(b"\xef\xbb\xbf \t")
                    quoted = quoted or b'"' in line
    except OSError:
        return None
    if path.suffix.lower() in _JSONL_SUFFIXES or (first or b"").startswith(b"{"):
        return lines
    if quoted:
        lines = _csv_rows(path)
    return max(lines - 1, 0) if lines is not None else None


def _csv_rows(path: Path) -> int | None:
    """A CSV's non-blank rows, a quoted field's line breaks inside its row (None: not UTF-8 text,
    which its reader refuses anyway)."""
    import csv

    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return sum(1 for row in csv.reader(f) if any(cell.strip() for cell in row))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def progress_total(path: Path, transforms: Any, limit: int | None, options: dict[str, Any] | None = None,
                   until: float | None = None) -> int | None:
    """How many requests the replay will have arrived when its trace is done, where a count of the
    file's rows tells it; None where it does not: a window, a rate change, ``--until`` (arrivals
    after it never happen), options that leave rows out (a filter, ``on_error=skip``)."""
    options = options or {}
    rated = transforms.rate_scale is not None or transforms.rate_profile is not None
    filtered = (any(key in options for key in _FILTERS) or options.get("failed", "keep") != "keep"
                or options.get("on_error", "raise") != "raise")
    if transforms.window is not None or rated or until is not None or filtered:
        return None
    total = count_rows(path)
    if total is not None and transforms.repeat:
        total *= transforms.repeat
    if total is not None and limit is not None:
        total = min(total, limit)
    return total


@contextlib.contextmanager
def progress_bar(path: Path, transforms: Any, limit: int | None, options: dict[str, Any] | None = None,
                 until: float | None = None) -> Iterator[Callable[[int, float], None]]:
    """The replay's progress callback: a rich progress bar on stderr.

    The bar, "replay", counts arrivals against `progress_total` (none known: a count alone); the replay
    calls back every 256 arrivals and each simulated minute. Once the last request has arrived (the driver
    calls the callback's ``trace_ended``, or the count reaches the total) the replay drains what is in the
    system, which can take longer than the arrivals did: the bar turns to an indeterminate "draining" one
    (rich stops the elapsed clock of a task at its total, so it is never given a count that reaches it),
    still showing the simulated second."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = progress_total(path, transforms, limit, options, until)
    bar = Progress(
        TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.fields[count]}"),
        TextColumn("sim t={task.fields[t]:.0f}s"), TimeElapsedColumn(), console=common.err, transient=True,
    )
    with bar:
        yield _ReplayProgress(bar, bar.add_task("replay", total=total, t=0.0, count=_count(0, total)), total)


class _ReplayProgress:
    """`progress_bar`'s callback: ``(arrived, sim_s)`` on arrivals and ticks, ``trace_ended`` once the trace is done."""

    def __init__(self, bar: Any, task: Any, total: int | None) -> None:
        self.bar, self.task, self.total, self.draining = bar, task, total, False

    def __call__(self, n: int, t: float) -> None:
        if not self.draining and self.total is not None and n >= self.total:
            self.trace_ended(n, t)  # (every request counted has arrived)
            return
        if self.draining:
            self.bar.update(self.task, completed=n, t=t, count=f"{n:,} arrived")
        else:
            self.bar.update(self.task, completed=n, t=t, count=_count(n, self.total))

    def trace_ended(self, n: int, t: float) -> None:
        if not self.draining:
            self.draining = True
            self.bar.update(self.task, description="draining")
            self.bar.tasks[0].total = None  # (`update` takes None as "unchanged": the task itself, rich's Task.total)
        self.bar.update(self.task, completed=n, t=t, count=f"{n:,} arrived")


def _count(n: int, total: int | None) -> str:
    return f"{n:,}/{total:,}" if total is not None else f"{n:,}"
