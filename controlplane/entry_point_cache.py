"""Plugin discovery's entry-point scan, cached on disk between processes.

``importlib.metadata.entry_points()`` reads and parses every installed distribution's
``entry_points.txt`` (a hundred of them in a typical environment: 7 ms of every start). The
result for the ``controlplane`` group is kept in the user's cache directory, one file per Python
environment and ``sys.path`` (which holds the working folder under ``python -m``, so processes
started from different folders do not take turns rewriting one file), under a signature of what
the scan reads (:func:`signature`): a distribution installed, changed or removed, or a changed
``sys.path``, makes the next start scan again. ``$CONTROLPLANE_CACHE_DIR`` moves the cache (the
fitted latency models' cache too); ``off`` turns both off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from controlplane.cache_dir import cache_root, write_atomically

_METADATA_FILES = ("entry_points.txt", "METADATA", "PKG-INFO")


def cache_file() -> Path | None:
    """This environment's and ``sys.path``'s cache file; None when caching is off."""
    where = cache_root()
    if where is None:
        return None
    env = hashlib.sha256("\0".join([sys.prefix, sys.executable, *sys.path]).encode()).hexdigest()[:16]
    return where / f"entry-points-{env}.json"


def signature() -> str:
    """A digest of what ``importlib.metadata`` reads to find entry points: ``sys.path`` in
    order, the distributions' metadata folders on it, and the stat (size, mtime, ctime, inode)
    of their ``entry_points.txt`` and ``METADATA``. Installing, removing or upgrading a
    distribution changes it; it costs a directory listing per ``sys.path`` entry."""
    digest = hashlib.sha256()
    for entry in sys.path:
        digest.update(f"\0path {entry}".encode())
        try:
            with os.scandir(entry or ".") as it:
                names = sorted(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:  # not a folder (a zip, a missing entry): its own stat
            try:
                st = os.stat(entry or ".")
                digest.update(f" {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}".encode())
            except OSError:
                pass
            continue
        for name in names:
            folder = os.path.join(entry or ".", name)
            digest.update(f"\0{name}".encode())
            for meta in _METADATA_FILES if os.path.isdir(folder) else ("",):
                try:
                    st = os.stat(os.path.join(folder, meta) if meta else folder)
                except OSError:
                    continue
                digest.update(f" {meta} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}".encode())
    return digest.hexdigest()


def read(path: Path, signature_: str) -> list[dict[str, Any]] | None:
    """The rows stored in ``path`` under ``signature_``; None when there are none (no file, an
    unreadable one, or one written for other installed distributions)."""
    try:
        saved = json.loads(path.read_bytes())
        if isinstance(saved, dict) and saved.get("signature") == signature_ and isinstance(saved.get("plugins"), list):
            return saved["plugins"]
    except (OSError, ValueError):
        pass
    return None


def write(path: Path, signature_: str, rows: list[dict[str, Any]]) -> None:
    """Store ``rows`` under ``signature_`` (atomically), and remove stale files of other paths;
    a read-only home still discovers, only slower."""
    write_atomically(path, json.dumps({"signature": signature_, "plugins": rows}).encode(), prune="entry-points-*")
