"""Where a command's wall time goes: named phase stamps, printed to stderr on request.

Set ``CONTROLPLANE_TIMINGS=1`` in the environment of a ``controlplane`` command and the
process prints, as it exits, one line to stderr::

    controlplane-timings {"main": 1764750000.12, "loop_start": ..., "phases": {...}}

The stamps are wall-clock epoch seconds (``time.time()``) so that a parent process can line
them up with its own clock (``benchmarks/vs_vidur.py`` measures the interpreter's start and
the imports that way); ``phases`` holds the durations between consecutive stamps. The stamps
the replay path sets, in order: ``main`` (the CLI's entry function is running: interpreter
start and the ``controlplane.cli`` module are behind; a replay's writer process is forked next,
before typer and pydantic are imported), ``replay_imported`` (the command's modules are imported,
its config read, then the simulator's modules imported: config, core, numpy, SimPy),
``session_open`` (the run is open: plugins, and the run row sent to the writer process; with
none, the database engine, schema check and run row), ``loop_start`` (the latency models are
built and the run row's id is in; the first event comes next), ``loop_end`` (the trace is
exhausted and the simulation drained), ``closed`` (the last rows are written and the run row
finished), ``exit`` (stamped by the exit handler: the summary is printed).

A replay's writer process (``controlplane.storage.early``) prints its own line as it exits,
``WRITER_PREFIX`` and its stamps: ``main`` (its parent's, before the fork), ``writer_forked``,
``writer_imported`` (SQLAlchemy and the recorder), ``writer_ready`` (configured: the engine made
and the schema read; for a plain SQLite file, nothing yet), ``writer_start`` (the run row
received), ``writer_answered`` (its id sent), ``writer_closed``, ``writer_exit``.

Marking costs one dict store when on and one global read when off; it never changes what a run
does.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Final

ENV: Final = "CONTROLPLANE_TIMINGS"
PREFIX: Final = "controlplane-timings "
#: The line of a replay's writer process (``controlplane.storage.early``), printed as it exits.
WRITER_PREFIX: Final = "controlplane-timings-writer "

_stamps: dict[str, float] = {}
_enabled = bool(os.environ.get(ENV))
_registered = False


def enable() -> None:
    """Turn the stamps on for this process; they print at exit."""
    global _enabled
    _enabled = True
    _register()


def enabled() -> bool:
    return _enabled


def mark(name: str) -> None:
    """Stamp the wall-clock time of ``name`` (a later stamp of the same name replaces it)."""
    if _enabled:
        _stamps[name] = time.time()
        _register()


def stamps() -> dict[str, float]:
    """The stamps so far, in the order they were first made."""
    return dict(_stamps)


def phases(stamps_: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds between consecutive stamps, named ``<earlier>-><later>``."""
    items = list((stamps_ if stamps_ is not None else _stamps).items())
    return {f"{a}->{b}": round(tb - ta, 6) for (a, ta), (b, tb) in zip(items, items[1:])}


def report(prefix: str = PREFIX) -> str:
    """The line printed at exit."""
    import json  # (here: the code cache is installed after this module is imported, json's regexes after it)

    return prefix + json.dumps({**_stamps, "phases": phases()})


def parse(stderr: str, prefix: str = PREFIX) -> dict | None:
    """The stamps a process printed to ``stderr`` (None when it printed none); ``WRITER_PREFIX``:
    its writer process's."""
    import json

    for line in reversed(stderr.splitlines()):
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    return None


def print_writer_report() -> None:
    """In a forked writer process, which leaves without exit handlers: print its stamps (those
    of its parent before the fork, ``main``, then its own ``writer_*``) with ``WRITER_PREFIX``."""
    if _enabled and _stamps:
        _stamps["writer_exit"] = time.time()
        sys.stderr.write(report(WRITER_PREFIX) + "\n")
        sys.stderr.flush()


def _print_report() -> None:
    if _enabled and _stamps:
        _stamps["exit"] = time.time()
        sys.stderr.write(report() + "\n")
        sys.stderr.flush()


def _register() -> None:
    global _registered
    if not _registered:
        atexit.register(_print_report)
        _registered = True
