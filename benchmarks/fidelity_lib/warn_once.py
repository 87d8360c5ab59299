"""The latency model's "row(s) measured far from the fit" warning, shown once per profile.

Every simulation fits its profile again (`sim.latency.measured.MeasuredProfileModel.from_file`), and a fit with
rows far from its line warns each time, its count and rows in the message - so Python's own once-per-message
filter let a smoke run print 82 of them. `far_rows_once` shows the first warning of each profile (the source
the message names), counts the rest and, at the end, says how many were left out.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["FAR_ROWS", "far_rows_once"]

FAR_ROWS = re.compile(r"^(?P<source>.*): \d+ row\(s\) measured far from the fit")


@contextmanager
def far_rows_once(stream: TextIO | None = None) -> Iterator[Counter]:
    """Within the block, each profile's far-rows RuntimeWarning shown once (other warnings as ever); on leaving it,
    one line on ``stream`` (stderr) with how many more were left out, by profile. Yields the counts (every
    warning seen, by profile)."""
    seen: Counter = Counter()
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' signature)
            m = FAR_ROWS.match(str(message)) if issubclass(category, RuntimeWarning) else None
            if m is not None:
                seen[m["source"]] += 1
                if seen[m["source"]] > 1:
                    return
                message = f"{message} (shown once per profile; its later fits' warnings are counted at the end)"
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield seen
        finally:
            more = {src: n - 1 for src, n in seen.items() if n > 1}
            if more:
                print(f"RuntimeWarning: {sum(more.values())} more 'row(s) measured far from the fit' warning(s) left "
                      f"out (the same profiles fitted again): "
                      + ", ".join(f"{src} {n}" for src, n in more.items()), file=stream or sys.stderr, flush=True)
