"""The user's cache directory for what a run can compute again: fitted latency-model pieces,
the installed plugins' entry points, parsed YAML configs.

``$CONTROLPLANE_CACHE_DIR`` moves it (default: the user's cache directory from platformdirs,
``~/.cache/controlplane`` on Linux); ``off`` (or ``0``, ``none``) turns every cache off. A cache
that cannot be written (a read-only home) is skipped: the run computes what it would have read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

__all__ = ["CACHE_ENV", "PRUNE_AFTER_S", "cache_root", "write_atomically"]

CACHE_ENV: Final = "CONTROLPLANE_CACHE_DIR"
#: Files not written for this long are removed when another of their kind is written (a file
#: in use is read, not rewritten: it is computed and written again at its next use).
PRUNE_AFTER_S: Final = 7 * 24 * 3600


def cache_root() -> Path | None:
    """The cache directory; None when caching is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("controlplane"))


def write_atomically(entry: Path, data: bytes, *, prune: str | None = None) -> None:
    """Write ``data`` to ``entry`` through a temporary file, so a reader never sees half of it;
    then remove the files of ``entry``'s folder matching the glob ``prune`` not written for
    :data:`PRUNE_AFTER_S`. An ``OSError`` is swallowed: a cache is never worth failing a run."""
    # The temporary file's name is this write's own (a cache folder may be shared by machines: pids repeat).
    tmp = entry.with_suffix(f".{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(data)
            tmp.replace(entry)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
            raise
        if prune is not None:
            cutoff = time.time() - PRUNE_AFTER_S
            for old in entry.parent.glob(prune):
                try:
                    if old.stat().st_mtime < cutoff:
                        old.unlink()
                except OSError:
                    pass
    except OSError:
        pass
