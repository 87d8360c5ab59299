"""What a recorder logs while its database is away: one line when the outage starts, a reminder
at growing intervals (a minute, then two, four, ... at most ten) with the rows pending, and one
line when it ends, saying how long it lasted and how many rows were written late.

Without it every failed write attempt and every flush that gave up logged a line: three retries
and a give-up every eight seconds or so, for as long as the outage lasted. The failures are
still counted (``RunRecorder.errors``, ``num_flush_failures``, ``retries``) and each one is
logged at DEBUG. A write that fails for its data (a duplicate key, a value the column refuses)
or because it is not permitted (a read-only role, a SQLite file this process may not write) is no
outage: the recorder logs it as an error every time. A database whose schema is gone (dropped and made
again, its tables deleted) is none either, and will not mend: said once, as an error saying what to do
(`OutageLog.schema_gone`: the recorder writes nothing more there and spills at its close, at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from controlplane.storage.retry import FlushFailure

__all__ = ["FIRST_REMINDER_S", "MAX_REMINDER_S", "OutageLog"]

log = logging.getLogger("controlplane.storage.recorder")

#: The first reminder that the database is still away comes this long after the outage began;
#: each later one twice as long after the one before, at most ``MAX_REMINDER_S``.
FIRST_REMINDER_S: Final = 60.0
MAX_REMINDER_S: Final = 600.0


def _lasted(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class OutageLog:
    """The outage state of one recorder writing to ``target`` (its URL, password hidden).
    ``pending`` counts the recorder's rows not yet written, ``written`` its rows written by table;
    ``clock`` is the recorder's (monotonic seconds). Not thread-safe: the recorder calls it
    under its I/O lock."""

    def __init__(self, target: str, *, pending: Callable[[], int], written: Mapping[str, int],
                 clock: Callable[[], float] = time.monotonic, first_reminder_s: float = FIRST_REMINDER_S,
                 max_reminder_s: float = MAX_REMINDER_S) -> None:
        self.target = target
        self._pending, self._written, self._clock = pending, written, clock
        self.first_reminder_s, self.max_reminder_s = first_reminder_s, max_reminder_s
        self.started_at: float | None = None  # clock time of the outage's first failed write, None when none
        self.failures = 0  # failed write attempts in this outage
        self.spilled_rows = 0  # rows spilled to files in this outage
        self.outages = 0  # outages that ended
        self.schema_gone: str | None = None  # the error of a write that found the database's schema gone
        self._written_at_start = 0
        self._interval = first_reminder_s
        self._next_reminder = 0.0

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def _total_written(self) -> int:
        return sum(self._written.values())

    def gave_up(self, failure: FlushFailure) -> None:
        """A write gave up after its retries: part of the outage, or (bad data) an error of its own."""
        if failure.retryable:
            self.failed(failure.error)
            return
        if failure.schema_missing:
            self._lost_schema(failure.error)
            return
        log.error("storage: flush to %s failed after %d attempt(s); %d rows kept pending: %s",
                  self.target, failure.attempts, failure.pending, failure.error)

    def failed(self, error: str) -> None:
        """A write attempt failed with a retryable ``error``: the first starts the outage."""
        now = self._clock()
        self.failures += 1
        if self.started_at is None:
            self.started_at, self._written_at_start = now, self._total_written()
            self._interval = self.first_reminder_s
            self._next_reminder = now + self._interval
            log.warning("storage: %s is unavailable (%s); %d rows pending are kept and retried (next report "
                        "in %.0f s if it is still away)", self.target, error, self._pending(), self._interval)
        elif now >= self._next_reminder:
            self._interval = min(self._interval * 2, self.max_reminder_s)
            self._next_reminder = now + self._interval
            spilled = f", {self.spilled_rows} of them spilled to files" if self.spilled_rows else ""
            log.warning("storage: %s still unavailable after %s (%d failed writes, last: %s); %d rows pending%s",
                        self.target, _lasted(now - self.started_at), self.failures, error, self._pending(), spilled)
        else:
            log.debug("storage: write to %s failed: %s", self.target, error)

    def _lost_schema(self, error: str) -> None:
        if self.schema_gone is not None:
            log.debug("storage: write to %s failed: %s", self.target, error)
            return
        self.schema_gone = error
        log.error("storage: %s lost its schema (%s): the database was dropped and made again, or its tables "
                  "deleted. No retry mends that, so nothing more is written there: the %d rows not yet written, and "
                  "those to come, are kept and saved to a spill file when the run closes, at once (`controlplane db "
                  "load-spill FILE` loads it into a database that holds the run again, restored from a backup); "
                  "start a new run (restart the daemon) to record there", self.target, error, self._pending())

    def spilled(self, rows: int, path: Path) -> None:
        """``rows`` waiting too long were spilled to ``path``: the outage's first spill is logged."""
        first = self.spilled_rows == 0 and self.schema_gone is None  # (schema gone: kept, as its line said)
        self.spilled_rows += rows
        (log.warning if first else log.debug)(
            "storage: %s is unavailable; %d rows spilled to %s, to be written when it is back%s", self.target,
            rows, path, "" if first else f" ({self.spilled_rows} spilled in this outage)")

    def ended(self) -> None:
        """Every pending row is written: an outage in progress ends (one line), else nothing. The line is at
        INFO, or at WARNING where INFO is not shown (a command's log shows its warnings only: ``sim replay``'s):
        a log that said the outage began says it ended."""
        if self.started_at is None:
            return
        lasted = self._clock() - self.started_at
        level = logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING
        log.log(level, "storage: %s is back after %s; %d rows written late (%d failed writes%s)", self.target,
                 _lasted(lasted), self._total_written() - self._written_at_start, self.failures,
                 f", {self.spilled_rows} rows spilled and written back" if self.spilled_rows else "")
        self.started_at, self.failures, self.spilled_rows = None, 0, 0
        self.outages += 1
