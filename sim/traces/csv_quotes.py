"""A CSV quote left open, found before it silently takes rows away.

A quoted CSV field may hold line breaks (a canonical prompt), so the `csv` module reads on, past
the end of the line, until the quote closes: an opening quote with no closing one (a hand edit, a
cut-off export) makes every following line part of that one field, up to the next quote in the
file or its end, and the rows on those lines are never read. Nothing else says so: the field is a
prompt, or a column no reader reads, and the row reads well.

`CsvRows` reads a trace's CSV and tells each row's first physical line; `open_quote` looks at a
row that spans lines and says whether a quote was left open: the field runs to the end of the
file (the `csv` module ends a row there without a word), or a line inside it reads as a row of the
file (the header's number of fields, numbers where the file has numbers).
"""

from __future__ import annotations

import csv
import itertools
import re
from typing import Callable, Iterable, Sequence, TextIO

from ._io import PathLike
from .errors import TraceFormatError

_BREAK = re.compile(r"\r\n|\r|\n")
_DATE = re.compile(r"\s*\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
_SHOWN = 60  # characters of a swallowed line an error shows


class _EndOfFile:
    """The iterator after a file's lines: ``hit`` once the `csv` module asked for a line past the last."""

    __slots__ = ("hit",)

    def __init__(self) -> None:
        self.hit = False

    def __iter__(self) -> "_EndOfFile":
        return self

    def __next__(self) -> str:
        self.hit = True
        raise StopIteration


class CsvRows:
    """``csv.reader`` over ``f`` (its `reader`: `line_num` is the last line read), and whether the row just
    read was ended by the end of the file rather than by a line break (``cut_by_end``)."""

    __slots__ = ("reader", "_end")

    def __init__(self, f: TextIO) -> None:
        self._end = _EndOfFile()
        self.reader = csv.reader(itertools.chain(f, self._end))  # (the sentinel costs nothing per line)

    @property
    def cut_by_end(self) -> bool:
        """Whether the `csv` module reached the end of the file inside the last row it gave: only a quoted field
        left open makes it read on past a row's last line. (Asked of a row that spans lines, before the next.)"""
        return self._end.hit


def row_shape(width: int, ints: Iterable[int] = (), numbers: Iterable[int] = (),
              dates: Iterable[int] = ()) -> Callable[[Sequence[str]], bool]:
    """Whether a line's fields read as a row of a file: ``width`` fields (or more, the rest empty), integers
    at ``ints``, numbers at ``numbers``, timestamps (``YYYY-MM-DD HH:MM``...) at ``dates``."""
    ints, numbers, dates = tuple(ints), tuple(numbers), tuple(dates)

    def reads(fields: Sequence[str]) -> bool:
        if len(fields) < width or any(c.strip() for c in fields[width:]):
            return False
        try:
            for i in ints:
                int(fields[i])
            for i in numbers:
                float(fields[i])
        except ValueError:
            return False
        return all(_DATE.match(fields[i]) for i in dates)

    return reads


def open_quote(path: PathLike, row: Sequence[str], start: int, end: int, header: Sequence[str], cut_by_end: bool,
               shape: Callable[[Sequence[str]], bool], on_purpose: str = "") -> TraceFormatError | None:
    """The error of a row on lines ``start``-``end`` (several) whose quote was left open, naming the line it
    opened on and the lines it took; None for a quoted field that holds line breaks on purpose. ``on_purpose``:
    what to do where a field holds a line that reads as a row on purpose (a format with text fields)."""
    line = start
    for i, cell in enumerate(row):
        pieces = _BREAK.split(cell)
        if len(pieces) == 1:
            continue
        field = header[i] if i < len(header) else header[-1]
        taken = (f"line {end} was read into this field, not as a row" if end == line + 1 else
                 f"lines {line + 1}-{end} were read into this field, not as rows")
        if cut_by_end:
            return TraceFormatError(path, line, field, f"a quote opened on line {line} is never closed: the field "
                                    f"runs to the end of the file, and {taken}; close the quote or remove it")
        if (found := row_in_field(pieces, shape)) is not None:
            k, piece = found
            # (it may be closed where it should be, a field holding such a line on purpose: nothing tells the two)
            return TraceFormatError(
                path, line, field,
                f"the quoted field opened on line {line} holds line {line + k} ({piece[:_SHOWN]!r}), which reads as a "
                f"row of this file: a quote left open reads the rows after it into one field (here {taken}), so "
                "such a field is refused; if a quote was left open, close it or remove it"
                + (f"; if the field holds that line on purpose, {on_purpose}" if on_purpose else ""))
        line += len(pieces) - 1
    return None


def row_in_field(pieces: Sequence[str] | str, shape: Callable[[Sequence[str]], bool]) -> tuple[int, str] | None:
    """Which of a field's lines (``pieces``, or the field's text, split at its line breaks) reads as a row of the
    file (``shape``, `row_shape`): the first (its index and text), the field's first line included (a quote opening
    a row takes that row's line whole); None when none does."""
    if isinstance(pieces, str):
        pieces = _BREAK.split(pieces)
    for k, piece in enumerate(pieces):
        if piece.strip() and shape(next(csv.reader([piece]), [])):
            return k, piece
    return None

