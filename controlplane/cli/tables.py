"""Tables that fit the terminal without cutting what must be read whole.

rich shares a table too wide for the terminal out among its columns and cuts what does not fit with an
ellipsis: at 80 columns `runs list` headed its requests ``reque…`` and cut its dates, `plugins list` gave its
descriptions 5 characters, `runs show --timeline` cut its clock to ``0:00:…``. `fitted` keeps each column
of numbers, ids, times and names (`WHOLE`) as wide as its widest value, lets a column of words (`WORDS`)
wrap between them but never cut one, and folds text (`TEXT`) into what is left; where even that does not fit,
the rows are listed a key and its value a line (`vertical`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TEXT", "WHOLE", "WORDS", "fitted", "vertical"]

WHOLE = "whole"  # a number, an id, a time, a name: never wrapped nor cut (its header wraps between words)
WORDS = "words"  # wraps between words, never inside one
TEXT = "text"  # wraps, and folds a word longer than the column (nothing is cut)


def fitted(t: Any, width: int, kinds: Sequence[str], *, least: Mapping[int, int] | None = None) -> Any:
    """``t`` fitted to ``width`` by its columns' ``kinds`` (one a column): `WHOLE` never narrower than its
    widest value, `WORDS` than its longest word, `TEXT` than 3 characters or its ``least`` (by index), a
    longer word folded. As it is where it fits whole; else each column narrowed from its widest, the widest
    first, with the table's rules or, where they take too much, compact ones (no vertical lines); else
    `vertical`."""
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=max(width, 1000), height=25)  # (with a height: a dumb terminal's console is 80 wide else)
    caption, t.caption = t.caption, None  # (measured without its caption, which wraps in any width)
    try:
        if Measurement.get(console, console.options, t).maximum <= width:
            return t
        natural, lower = _bounds(t, console, kinds, least or {})
        fits = _set_widths(t, console, width, natural, lower)
        if not fits:
            t.box, t.show_edge, t.pad_edge, t.collapse_padding = box.SIMPLE_HEAD, False, False, True
            fits = _set_widths(t, console, width, natural, lower)
        if not fits:
            t.caption = caption
            return vertical(t)
        for j, column in enumerate(t.columns):
            column.header = _text(_plain(column.header), no_wrap=False, overflow="fold")  # (wraps between words)
            if kinds[j] == WHOLE:
                column.no_wrap = True
            else:
                column.overflow = "fold"
        return t
    finally:
        t.caption = caption


def _text(*args: Any, **kwargs: Any) -> Any:
    from rich.text import Text

    return Text(*args, **kwargs)


def _bounds(t: Any, console: Any, kinds: Sequence[str], least: Mapping[int, int]) -> tuple[list[int], list[int]]:
    """Each column's widest and narrowest width by its kind (see `fitted`)."""
    from rich.measure import Measurement

    natural, lower = [], []
    for j, column in enumerate(t.columns):
        cells = list(column.cells)
        widest = max([Measurement.get(console, console.options, c).maximum for c in cells] + [1])
        header_word = max((len(w) for w in _plain(column.header).split()), default=1)
        if kinds[j] == WHOLE:
            natural.append(max(widest, header_word))
            lower.append(natural[-1])
        elif kinds[j] == WORDS:
            word = max([len(w) for c in cells for w in _plain(c).split()] + [header_word])
            natural.append(max(widest, len(_plain(column.header)), word))
            lower.append(word)
        else:
            natural.append(max(widest, len(_plain(column.header))))
            lower.append(min(natural[-1], least.get(j, 3)))
    return natural, lower


def _set_widths(t: Any, console: Any, width: int, natural: list[int], lower: list[int]) -> bool:
    """Each column's width, from its natural one down to its lower bound, the widest first, until the table
    fits ``width``; False where it cannot."""
    from rich.measure import Measurement

    widths = list(natural)
    for j, column in enumerate(t.columns):
        column.min_width = column.max_width = widths[j]
    chrome = Measurement.get(console, console.options, t).maximum - sum(widths)  # (rules, padding)
    while sum(widths) + chrome > width:
        shrinkable = [j for j in range(len(widths)) if widths[j] > lower[j]]
        if not shrinkable:
            for column in t.columns:
                column.min_width = column.max_width = None
            return False
        j = max(shrinkable, key=lambda k: widths[k])
        widths[j] -= 1
    for j, column in enumerate(t.columns):
        column.min_width = column.max_width = widths[j]
    return True


def vertical(t: Any) -> Any:
    """The rows of ``t`` a key (its column's header) and value a line, a row after the other: for a
    terminal too narrow for a row a line. The keys are whole; a long value folds onto the next lines."""
    from rich import box
    from rich.table import Table

    headers = [_plain(c.header) for c in t.columns]
    v = Table(title=t.title, caption=t.caption, show_header=False, box=box.SIMPLE, pad_edge=False,
              collapse_padding=True, caption_justify=t.caption_justify)
    v.add_column("key", style="bold", no_wrap=True, min_width=max(map(len, headers), default=1))
    v.add_column("value", overflow="fold")
    rows = list(zip(*(list(c.cells) for c in t.columns)))
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            v.add_row(headers[j], cell, end_section=j == len(row) - 1 and i < len(rows) - 1)
    return v


def _plain(cell: Any) -> str:
    """A cell's text without markup."""
    from rich.text import Text

    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)
