"""Progress of one long replay on stderr, for benchmarks/autoscaling.py.

A week of trace, or a day replicated to need 16 replicas, replays for minutes per policy, and the
benchmark printed nothing until each replay ended: a reviewer could not tell a slow run from a hung
one, nor how far in the trace it was. `Progress` is the replay's ``on_progress`` callback (called
every 256 arrivals); it prints at most once per ``every_s`` wall seconds which run it is, how many
requests have arrived and how far the simulated clock is. It only reads what it is given, so the
replay's numbers are the same with it and without it.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def clock_text(sim_s: float) -> str:
    """Simulated seconds as ``[Nd ]HH:MM:SS`` (a multi-day trace reads as days)."""
    s = int(max(sim_s, 0.0))
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


class Progress:
    """``on_progress(arrived, sim_s)`` printing ``label: N requests arrived, simulated T (wall W s)``."""

    __slots__ = ("label", "every_s", "stream", "clock", "started", "last")

    def __init__(self, label: str, every_s: float, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.every_s, self.stream, self.clock = label, every_s, stream, clock
        self.started = self.last = clock()

    def __call__(self, arrived: int, sim_s: float) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        print(f"  {self.label}: {arrived:,} requests arrived, simulated {clock_text(sim_s)} "
              f"(wall {now - self.started:.0f} s)", file=self.stream or sys.stderr, flush=True)


def progress_for(label: str, every_s: float | None) -> Progress | None:
    """The callback for a run, or None when progress is off (``--progress 0``)."""
    return Progress(label, every_s) if every_s and every_s > 0 else None


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("autoscaling_progress.py", "autoscaling.py [--progress S ...]"))
