"""Whether a process has a SQLite file open: a writer process forked then must not write it.

SQLite keeps one record per open file of the locks its connections hold. Its POSIX locks belong
to a process and are not inherited across ``fork``, but the record is: a child that opens a file
its parent had open believes it holds the parent's shared lock and takes none of its own. When
the parent then closes its last connection to the file (an earlier run's engine freed, a reader's
engine disposed), it gets the exclusive lock, checkpoints the write-ahead log and deletes it while
the child goes on writing into the deleted one: the child's rows are lost, without an error.
(Until 2026-12-06 a run that wrote inline, then a run with a writer process in the same process,
lost the second run's every row this way; ``tests/storage/test_shared_file.py``.)

So :class:`controlplane.storage.early.EarlyWriter` notes the files open when it forks
(:func:`open_files`), and a run writes inline where its SQLite file is among them (:func:`open_here`).
"""

from __future__ import annotations

import os
import stat

__all__ = ["open_files", "open_here", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (``sqlite:///runs.db``, ``sqlite+pysqlite:////abs/runs.db``), else
    None: another database, in memory, a ``file:`` URI."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = rest[1:].split("?", 1)[0]
    return None if not path or path == ":memory:" or path.startswith("file:") else path


def open_files() -> frozenset[tuple[int, int]]:
    """The (device, inode) of every regular file this process has open (``/proc/self/fd``; none
    where that cannot be read)."""
    found = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return frozenset()
    for name in fds:
        try:
            st = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def open_here(url: str, files: frozenset[tuple[int, int]]) -> bool:
    """Whether ``url``'s SQLite file is one of ``files`` (:func:`open_files`); False for another database
    and for a file that does not exist yet."""
    path = sqlite_path(url)
    if path is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in files
