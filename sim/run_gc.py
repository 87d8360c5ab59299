"""The cyclic garbage collector during a simulated run: out of the run's way, and run between runs."""

from __future__ import annotations

import gc
import threading
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

    Runs may overlap (replays in threads of one process): the settings are process-wide, so the
    first run to start saves them and changes them, and the last to end gives them back (a
    per-run save and restore left the thresholds at ``RUN_GC_THRESHOLD`` for good when the first
    run ended before the second; and ended the freeze under a run still going).
    """
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    """The first of overlapping runs: save the thresholds, set the run's, freeze (`run_objects_only_for_gc`)."""
    global _depth, _saved_threshold, _we_froze, _runs_started
    with _lock:
        _depth += 1
        if _depth > 1:  # (a run already under way set everything)
            return
        _saved_threshold = gc.get_threshold()
        gc.set_threshold(*RUN_GC_THRESHOLD)
        _we_froze = False
        try:
            if gc_freeze.any_frozen():  # someone else froze objects on purpose: leave it to them
                return
            if _runs_started:
                gc.collect()  # an earlier run's cycles, not to be frozen with the rest
            _runs_started += 1
            gc.freeze()
            _we_froze = True
        except BaseException:
            _depth -= 1
            gc.set_threshold(*_saved_threshold)
            raise


def _exit() -> None:
    """The last of overlapping runs to end: unfreeze (when the first froze) and give the thresholds back."""
    global _depth, _we_froze
    with _lock:
        _depth -= 1
        if _depth:
            return
        try:
            if _we_froze:
                gc.unfreeze()
                _we_froze = False
        finally:
            gc.set_threshold(*_saved_threshold)


#: The collector's thresholds during a run (`run_objects_only_for_gc`); CPython's default is (700, 10, 10).
RUN_GC_THRESHOLD = (100_000, 50, 100)
#: Runs this process has started under `run_objects_only_for_gc` (every one after the first collects first).
_runs_started = 0
#: Runs under `run_objects_only_for_gc` now (overlapping ones in threads), the thresholds the first
#: of them found, whether it froze; changed under ``_lock``.
_lock = threading.RLock()  # (reentrant: a finalizer run by the collection in `_enter` may start a run)
_depth = 0
_saved_threshold: tuple[int, ...] = gc.get_threshold()
_we_froze = False
