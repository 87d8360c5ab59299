"""Trace input errors that point at the exact file, line and field.

Traces are large and hand-edited; an error that says `trace.csv:17: field 'GeneratedTokens'`
saves a bisect. `ErrorSink` decides per reader whether a bad row stops the read or is
skipped and recorded.
"""

from __future__ import annotations

import os
from typing import Callable, Literal, Union


class TraceFormatError(ValueError):
    """A trace file (or one of its rows) does not match its format.

    `line` is the 1-based physical line in the file (the CSV header is line 1), None when the
    problem is the file as a whole; `field` is the column or JSON key, None when not about one.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, field: str | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(path, line, field, reason)

    def __str__(self) -> str:
        return self._render()

    def _render(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.field is not None:
            return f"{where}: field {self.field!r}: {self.reason}"
        return f"{where}: {self.reason}"

    def __reduce__(self):  # keep the structured fields through pickling (multiprocessing)
        return (type(self), (self.path, self.line, self.field, self.reason))


#: Rows after the first skipped behind the same arrival from which that error names the likely cause.
CASCADE = 2

OnError = Union[Literal["raise", "skip"], Callable[[TraceFormatError], None]]
ON_ERROR_CHOICES = ("raise", "skip")


class ErrorSink:
    """What a reader does with a bad row: raise (default), or skip it and record the error.

    on_error: "raise", "skip", or a callable that gets each TraceFormatError (the row is skipped).
    Skipped errors are appended to `errors` (the first `max_kept` of them; `count` counts all),
    so a million bad rows cannot exhaust memory.

    `dropped` counts good rows a format's options leave out on purpose (BurstGPT's
    `failed="drop"`, its `models` filter), by reason: not errors, so never raised, but counted
    where the caller can see them (`TraceReader.dropped`).
    """

    __slots__ = ("raising", "callback", "errors", "count", "max_kept", "dropped", "_ahead", "_first", "_behind")

    def __init__(self, on_error: OnError = "raise", errors: list[TraceFormatError] | None = None,
                 max_kept: int = 1000) -> None:
        if callable(on_error):
            self.raising, self.callback = False, on_error
        elif on_error in ON_ERROR_CHOICES:
            self.raising, self.callback = on_error == "raise", None
        else:
            raise ValueError(f"unknown on_error {on_error!r}; valid choices: 'raise', 'skip' or a callable")
        self.errors: list[TraceFormatError] = [] if errors is None else errors
        self.count = 0
        self.max_kept = max_kept
        self.dropped: dict[str, int] = {}
        # The run of rows skipped as behind one same arrival: its value, its first error's place in
        # `errors` (None: not kept) and the rows after it.
        self._ahead: float | None = None
        self._first: tuple[int, TraceFormatError] | None = None
        self._behind = 0

    def __call__(self, err: TraceFormatError) -> None:
        if self.raising:
            raise err
        self.count += 1
        kept = len(self.errors) < self.max_kept
        if kept:
            self.errors.append(err)
        self._cascade(err, len(self.errors) - 1 if kept else None)
        if self.callback is not None:
            self.callback(err)

    def _cascade(self, err: TraceFormatError, index: int | None) -> None:
        """Rows skipped one after the other as behind the same arrival: one row far ahead of its
        neighbours (two rows swapped) makes every row after it, up to its time, go "backwards" while
        the misplaced row itself was kept. Order is judged against the rows read so far (a stream
        reader cannot take back a row it gave), so the skip stands, but the first of these errors
        says that one row kept before it is the likely cause, and how many rows it cost."""
        ahead = getattr(err, "ahead", None)
        if ahead is None or ahead != self._ahead:
            self._ahead, self._behind = ahead, 0
            self._first = (index, err) if ahead is not None and index is not None else None
            return
        self._behind += 1
        if self._first is not None and self._behind >= CASCADE:
            at, first = self._first
            self.errors[at] = TraceFormatError(
                first.path, first.line, first.field,
                f"{first.reason}; so are the {self._behind:,} rows after it (to line {err.line}) that were skipped: "
                f"the row kept before line {first.line} (the previous row here) is likely the one out of place, ahead "
                "of its neighbours: move that row into order or remove it, and these rows are read")


def as_sink(on_error: "OnError | ErrorSink", errors: list[TraceFormatError] | None = None) -> ErrorSink:
    """The ErrorSink a reader reports to: the one given (read_trace shares its own), or a new one."""
    return on_error if isinstance(on_error, ErrorSink) else ErrorSink(on_error, errors)
