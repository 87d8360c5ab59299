"""What a sweep's runs warn of, said once by the driver.

A run's warnings (``logging`` at WARNING and above, and ``warnings``) are kept with its outcome
(`kept_messages`, around the run in whatever process ran it) instead of going to that process's stderr:
from a pool's or Ray's workers they were glued onto the driver's progress bar, one line per run, and every
run of a sweep over the same trace said the same thing (a trace longer than the model's context: 12 times
for 12 runs). The driver says each one once, as its runs come back (`said_once`), and at the end how many
runs said it (`say_repeats`): on a terminal that line is cut to its width, elsewhere (a CI log, a file) it is
whole.

The bad trace rows ``options: {on_error: skip}`` skipped are said the same way (`skipped_rows`), as
`controlplane sim replay` warns of them: the trace is read by the driver, not by a run, and nothing else said so.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from sim.replay_trace import BAD_ROWS_SKIPPED

__all__ = ["kept_messages", "said_once", "say_repeats", "skipped_rows"]

log = logging.getLogger("controlplane.sweep")


class _Keep(logging.Handler):
    def __init__(self, kept: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.kept.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a message that cannot be formatted is not the run's failure
            self.handleError(record)


@contextlib.contextmanager
def kept_messages() -> Iterator[list[str]]:
    """Within it, what is logged at WARNING or above and every warning shown is kept in the yielded list (in
    order) instead of being printed; the root logger's handlers are set back after."""
    kept: list[str] = []
    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers = [_Keep(kept)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield kept
    finally:
        root.handlers = handlers
        kept.extend(str(w.message) for w in caught)


def said_once(outcomes: Iterable[Any], seen: Counter[str]) -> Iterator[Any]:
    """``outcomes`` as they come, each message of theirs not said before logged as a warning; ``seen`` counts
    the runs that said each."""
    for outcome in outcomes:
        skipped = skipped_rows(getattr(getattr(outcome, "task", None), "rows_left_out", None) or {})
        for message in dict.fromkeys([*getattr(outcome, "messages", ()), *skipped]):
            if not seen[message]:
                log.warning("%s", message)
            seen[message] += 1
        yield outcome


def skipped_rows(rows_left_out: dict[str, Any]) -> list[str]:
    """The warning of a run's trace rows skipped as bad (``rows_left_out``: `sim.replay.rows_left_out` of its
    trace's read): how many, and the first errors with their file, line and field; none when none were."""
    skipped = (rows_left_out.get("trace_rows_left_out") or {}).get(BAD_ROWS_SKIPPED)
    if not skipped:
        return []
    first = "; ".join(rows_left_out.get("trace_bad_rows") or [])
    return [f"{skipped:,} bad trace row{'s' if skipped != 1 else ''} skipped (on_error: skip), not replayed; "
            f"the first: {first}"]


def say_repeats(seen: Counter[str]) -> None:
    """One line for each message more than one run said (each was said once, above): cut to the terminal's width
    when stderr is one (`fit_terminal`), whole otherwise (a log file has no width)."""
    for message, runs in seen.items():
        if runs > 1:
            log.warning("%s", fit_terminal(f"{runs} runs warned the same: {message}"))


def fit_terminal(line: str) -> str:
    """``line`` cut with "…" to the width of the terminal stderr is; whole where stderr is not a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)  # (None: no stderr; a stand-in stream may have no isatty)
    if not (callable(isatty) and isatty()):
        return line
    width = shutil.get_terminal_size().columns
    return line if len(line) <= width else line[:max(width - 1, 1)] + "…"
