"""A run's journal of accepted requests: what a daemon killed with SIGKILL had not recorded yet.

Request rows reach the database in batches, from the recorder's thread, once a request is over;
a daemon killed in between (SIGKILL, the OOM killer) leaves accepted requests with no row. So the
daemon appends each request id to a per-run file the moment it accepts the request, and again,
with its final status (``id<TAB>status``), the moment its client is given its final answer: a
request answered but not yet in the database is then told apart from one whose client never had
an answer (only that one is safe to retry). Each is one ``write(2)`` on an ``O_APPEND``
descriptor: the kernel keeps it when the process dies; only a machine crash can lose the last
lines. A clean close removes the file. The next daemon on the host finds the dead run
(`controlplane.storage.crashed`), compares the journal with the request rows and lists the
accepted requests without a row in the run's summary, answered or never answered.

The directory is ``$CONTROLPLANE_JOURNAL_DIR`` or the user's state directory
(``platformdirs.user_state_dir("controlplane")/journal``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ANSWER_STATUSES", "JOURNAL_DIR_ENV", "RequestJournal", "journal_dir", "read_answered", "read_journal"]

JOURNAL_DIR_ENV = "CONTROLPLANE_JOURNAL_DIR"

#: The final statuses an answer line may carry (`LiveResult.status`): a line ``id<TAB>word`` with
#: another word is an accepted id that holds a tab.
ANSWER_STATUSES = frozenset({"completed", "blocked", "rejected", "failed", "in_flight", "timeout", "cancelled"})


def journal_dir() -> Path:
    """Where journals live: ``$CONTROLPLANE_JOURNAL_DIR`` or the user's state directory."""
    configured = os.environ.get(JOURNAL_DIR_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_state_dir("controlplane")) / "journal"


class RequestJournal:
    """The append-only list of one run's accepted request ids (one per line), and of the answered
    ones (``id<TAB>status``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @classmethod
    def for_run(cls, run_id: int, directory: str | Path | None = None) -> RequestJournal:
        """The journal of ``run_id`` in ``directory`` (default: `journal_dir`)."""
        base = Path(directory) if directory is not None else journal_dir()
        return cls(base / f"run-{run_id}-{os.getpid()}.log")

    def accepted(self, request_id: str) -> None:
        """Note a request the daemon has accepted (before anything else can happen to it)."""
        if self._fd is not None:
            os.write(self._fd, f"{request_id}\n".encode())

    def answered(self, request_id: str, status: str) -> None:
        """Note that the client of ``request_id`` was given its final answer, in state ``status``
        (a `LiveResult` status): were the daemon killed before its row is written, retrying it
        would serve it twice."""
        if self._fd is not None:
            os.write(self._fd, f"{request_id}\t{status}\n".encode())

    def close(self, *, remove: bool) -> None:
        """Stop writing; ``remove``: the run was closed and every row is in the database."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)


def read_journal(path: str | Path) -> list[str]:
    """The accepted request ids in a journal, in order, without repeats; a torn last line is skipped."""
    return _read(path)[0]


def read_answered(path: str | Path) -> dict[str, str]:
    """The answered request ids of a journal and their final status (a journal of an older daemon
    has none)."""
    return _read(path)[1]


def _read(path: str | Path) -> tuple[list[str], dict[str, str]]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], {}
    lines = data.split(b"\n")
    if lines and lines[-1]:  # the process died in the middle of a write
        lines = lines[:-1]
    seen: dict[str, None] = {}
    answered: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        text = line.decode(errors="replace")
        rid, tab, status = text.rpartition("\t")
        if tab and status in ANSWER_STATUSES:
            answered[rid] = status
        else:
            seen.setdefault(text, None)
    return list(seen), answered
