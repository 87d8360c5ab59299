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


#: pydantic's entry-point group: pydantic scans every distribution for it when it builds its
#: first model (the same reads as a plugin scan); the cache keeps what a scan found there too.
PYDANTIC_GROUP = "pydantic"

_kept: tuple[tuple[str, ...], str] | None = None  # (sys.path, signature) from `keep_signature`, used once


def keep_signature() -> str:
    """:func:`signature` now, kept for the next :func:`signature` call of this process (once, and
    only while ``sys.path`` is the same): a command that reads the cache early (see
    :func:`no_pydantic_plugins`) and discovers plugins later computes it once."""
    global _kept
    _kept = None  # computed now, not an earlier one kept
    signature_ = signature()
    _kept = (tuple(sys.path), signature_)
    return signature_


def signature() -> str:
    """A digest of what ``importlib.metadata`` reads to find entry points: ``sys.path`` in
    order, the distributions' metadata folders on it, and the stat (size, mtime, ctime, inode)
    of their ``entry_points.txt`` and ``METADATA``. Installing, removing or upgrading a
    distribution changes it; it costs a directory listing per ``sys.path`` entry."""
    global _kept
    kept, _kept = _kept, None
    if kept is not None and kept[0] == tuple(sys.path):
        return kept[1]
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
    unreadable one, one written for other installed distributions, or one without pydantic's
    group, from before it was kept: scanned again once)."""
    try:
        saved = json.loads(path.read_bytes())
        if (isinstance(saved, dict) and saved.get("signature") == signature_ and isinstance(saved.get("plugins"), list)
                and isinstance(saved.get(PYDANTIC_GROUP), list)):
            return saved["plugins"]
    except (OSError, ValueError):
        pass
    return None


def write(path: Path, signature_: str, rows: list[dict[str, Any]], pydantic: list[list[str]]) -> None:
    """Store ``rows`` and ``pydantic`` (the ``pydantic`` group's entry points, [name, value] each)
    under ``signature_`` (atomically), and remove stale files of other paths; a read-only home
    still discovers, only slower."""
    saved = {"signature": signature_, "plugins": rows, PYDANTIC_GROUP: pydantic}
    write_atomically(path, json.dumps(saved).encode(), prune="entry-points-*")


def no_pydantic_plugins() -> bool:
    """Whether the cache, written for the distributions installed now, says that none of them
    installs a pydantic plugin (False when it cannot tell: no cache, caching off, another
    signature, a file from before it kept pydantic's group). Keeps the signature it computed
    for plugin discovery (:func:`keep_signature`)."""
    path = cache_file()
    if path is None:
        return False
    signature_ = keep_signature()
    try:
        saved = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved.get("signature") == signature_ and saved.get(PYDANTIC_GROUP) == []
