"""The latency model's "row(s) measured far from the fit" warning, shown once per profile.

Every simulation fits its profile again (`sim.latency.measured.MeasuredProfileModel.from_file`), and a fit with
rows far from its line warns each time, its count and rows in the message - so Python's own once-per-message
filter let a smoke run print 82 of them. `far_rows_once` shows the first warning of each profile (the source
the message names), counts the rest and, at the end, says how many were left out.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["FAR_ROWS", "far_rows_once"]

FAR_ROWS = re.compile(r"^(?P<source>.*): \d+ row\(s\) measured far from the fit")
PAST_PROFILE = re.compile(r"iterations priced .* were past every row of (?P<source>\S+?):? ")


class _PastProfileOnce(logging.Filter):
    """A replay's "N of M iterations priced ... were past every row of PROFILE" line, once per profile: each of the
    benchmark's simulations on a profile says it (the later ones counted in ``repeated``)."""

    def __init__(self, repeated: Counter) -> None:
        super().__init__()
        self.repeated = repeated

    def filter(self, record: logging.LogRecord) -> bool:
        m = PAST_PROFILE.search(record.getMessage())
        if m is None:
            return True
        self.repeated[f"past every row of {m['source']}"] += 1
        return self.repeated[f"past every row of {m['source']}"] == 1


@contextmanager
def far_rows_once(stream: TextIO | None = None) -> Iterator[Counter]:
    """Within the block, each profile's far-rows RuntimeWarning shown once (other warnings as ever); on leaving it,
    one line on ``stream`` (stderr) with how many more were left out, by profile. Yields the counts (every
    warning seen, by profile)."""
    seen: Counter = Counter()
    repeated: Counter = Counter()  # (a profile's other notes and its runs' past-the-rows lines, by text / profile)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' signature)
            m = FAR_ROWS.match(str(message)) if issubclass(category, RuntimeWarning) else None
            if m is not None:
                seen[m["source"]] += 1
                if seen[m["source"]] > 1:
                    return
                message = f"{message} (shown once per profile; its later fits' warnings are counted at the end)"
            elif getattr(category, "one_line", False):  # (a profile's other notes: the same text at every fit)
                repeated[str(message)] += 1
                if repeated[str(message)] > 1:
                    return
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        past = _PastProfileOnce(repeated)
        replay_log = logging.getLogger("sim.replay")
        replay_log.addFilter(past)
        try:
            yield seen
        finally:
            replay_log.removeFilter(past)
            again = sum(n - 1 for n in repeated.values() if n > 1)
            if again:
                print(f"ProfileWarning: {again} more warning(s) of the same profiles left out (each shown at its "
                      "first fit or run)", file=stream or sys.stderr, flush=True)
            more = {src: n - 1 for src, n in seen.items() if n > 1}
            if more:
                print(f"RuntimeWarning: {sum(more.values())} more 'row(s) measured far from the fit' warning(s) left "
                      f"out (the same profiles fitted again): "
                      + ", ".join(f"{src} {n}" for src, n in more.items()), file=stream or sys.stderr, flush=True)
