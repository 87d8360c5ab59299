"""`controlplane runs compare`'s bootstrap, when it takes a while: a line saying how long and how to
make it quicker (--resamples, --no-ci), and a progress bar on a terminal."""

from __future__ import annotations

import time
from typing import Any

from controlplane.cli import common

__all__ = ["SLOW_S", "CompareProgress"]

#: A bootstrap projected to take longer than this (seconds) says so, and shows its progress.
SLOW_S = 3.0
#: How long it runs before its projection is trusted (seconds).
_MEASURE_S = 0.5


class CompareProgress:
    """``compare_samples``'s ``progress``: ``total`` steps, timed; once the projection passes ``SLOW_S``,
    one line on stderr (its resamples, how long, ``--resamples`` and ``--no-ci``) and, on a terminal, a bar."""

    def __init__(self, total: int, resamples: int, requests: int) -> None:
        self.total, self.resamples, self.requests = max(total, 1), resamples, requests
        self.done = 0
        self.started = time.perf_counter()
        self.said = False
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, k: int) -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        elapsed = time.perf_counter() - self.started
        if self.said or elapsed < _MEASURE_S:
            return
        projected = elapsed / self.done * self.total
        if elapsed * (self.total - self.done) / self.done < SLOW_S:  # (its time left: 0 when done, never under)
            return
        self.said = True
        err = common.console("err")
        fewer = max(100, self.resamples // 5)
        err.print(f"note: {self.resamples:,} bootstrap resamples of {self.requests:,} requests take about "
                  f"{projected:.0f} s; --resamples {fewer} is about {max(1, round(projected * fewer / self.resamples))} s "
                  "(a slightly noisier interval), --no-ci compares the summaries without intervals at once",
                  highlight=False, soft_wrap=True)
        if err.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("bootstrap"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeRemainingColumn(), console=err, transient=True)
            self._task = self._bar.add_task("bootstrap", total=self.total, completed=self.done)
            self._bar.start()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> CompareProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
