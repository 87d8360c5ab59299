"""Runs whose worker process died under them (SIGKILL, the OOM killer, a crash in native code): run again once,
then stored as failed, so that the sweep goes on.

A process pool whose worker dies is broken for good (``BrokenProcessPool``, for every run it held): it aborted
the whole sweep with a traceback, the runs not yet done never ran. The pool backend now starts a new pool for
them (`sim.sweep.backends.PoolBackend`); Ray's backend does the same for a task whose worker died. The run that
was on the dead worker is run again once; if its worker dies again, it is stored ``failed`` with both deaths as
its error (a run that kills its worker every time would otherwise break every pool), and the sweep goes on.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

from sim.sweep.worker import RunOutcome, RunTask, failed_outcome

__all__ = ["LostRuns", "ended", "run_named"]

log = logging.getLogger("controlplane.sweep")


def ended(pid: int | None, exitcode: int | None) -> str:
    """How a worker process ended, in words: ``worker process 42 was killed by SIGKILL`` / ``exited with code 1``."""
    who = f"worker process {pid}" if pid is not None else "its worker process"
    if exitcode is None:
        return f"{who} died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"{who} was killed by {name}"
    return f"{who} exited with code {exitcode}"


def run_named(task: RunTask) -> str:
    """A run in words, as `runs list` names it (``'spec #2 seed 0'``), with a search's stage."""
    name = task.config.get("name") or f"#{task.index} seed {task.seed}"
    return f"run '{name}'" + (f" ({task.stage})" if task.stage else "")


@dataclass
class LostRuns:
    """The runs of one `Backend.run` whose worker died, by their token (an id the backend gives each run)."""

    first: dict[int, str] = field(default_factory=dict)  # token -> how its worker died the first time

    def lost(self, token: int, task: RunTask, how: str) -> RunOutcome | None:
        """``task``'s worker died (``how``, `ended`): None where it is to run again (the first time, said in one
        line), else its failed outcome (the second)."""
        if token not in self.first:
            self.first[token] = how
            log.warning("%s while running %s: it runs again (a run whose worker dies twice is stored as failed)",
                        how, run_named(task))
            return None
        log.warning("%s while running %s again: it is stored as failed", how, run_named(task))
        return failed_outcome(task, f"WorkerDied: its worker process died twice while running it: {self.first[token]}, "
                                    f"then {how}")
