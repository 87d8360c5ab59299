"""The cyclic garbage collector during a simulated run: out of the run's way, and run between runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from controlplane import gc_freeze

__all__ = ["RUN_GC_THRESHOLD", "run_objects_only_for_gc"]


@contextmanager
def run_objects_only_for_gc() -> Iterator[None]:
    """Keep the objects that exist before the run (modules, fitted latency tables, the
    caller's data: ~10^5 of them) out of the cyclic collector's full passes during the run,
    and let the collector run less often while it lasts.

    A replay allocates far more than it frees while it buffers rows, so the collector runs
    full collections; each would walk every object in the process (0.1-0.2 s a pass, a
    tenth of a 10k-request replay). ``gc.freeze`` parks them in the permanent generation;
    ``gc.unfreeze`` gives them back afterwards, so nothing stays uncollectable.

    A run's objects are reference cycles (the plane and its plugins, the events they keep): once
    its result is dropped they wait for a full collection. A second run in the same process
    (a benchmark's policies one after another, a sweep's worker) would freeze them with the rest
    and keep them through its own run, the next one both, and so on: a benchmark of ten
    million-request replays grew to 22 GB and was killed. So a run after the first collects first
    (a few milliseconds); the first in a process has no earlier run's objects to free.

    The youngest generation is collected every ``RUN_GC_THRESHOLD[0]`` net allocations instead
    of 700: at 700 it walks the requests, rows and batches of the last few hundred events
    before most of them are freed by their reference counts, ~5% of a long replay; a replay
    makes next to no reference cycles (the same peak memory with the collector off for 200,000
    requests), so they wait longer, nothing more. The thresholds are given back afterwards.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLD)
    try:
        if gc_freeze.any_frozen():  # someone else froze objects on purpose: leave it to them
            yield
            return
        global _runs_started
        if _runs_started:
            gc.collect()  # an earlier run's cycles, not to be frozen with the rest
        _runs_started += 1
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
    finally:
        gc.set_threshold(*threshold)


#: The collector's thresholds during a run (`run_objects_only_for_gc`); CPython's default is (700, 10, 10).
RUN_GC_THRESHOLD = (100_000, 50, 100)
#: Runs this process has started under `run_objects_only_for_gc` (every one after the first collects first).
_runs_started = 0
