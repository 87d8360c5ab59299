"""Fitted latency-model pieces cached on disk, so a replay does not re-read and re-fit the same
profile CSVs (or import pandas and scipy to do it) at every start.

An entry's key is the fitting function, its arguments, the profile file's content and the code
that fits it (this package's fitting modules), so editing either makes a new entry. Entries live
in ``$CONTROLPLANE_CACHE_DIR`` or the user's cache directory (platformdirs); set
``CONTROLPLANE_CACHE_DIR=off`` to fit every time. A missing, unreadable or stale entry is simply
fitted again; the cache never changes a result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from controlplane.cache_dir import CACHE_ENV, cache_root, write_atomically

__all__ = ["CACHE_ENV", "cache_dir", "cached_by_content", "disk_cached"]

#: The modules whose code decides what a fit returns: a change in any of them changes every key.
_FIT_MODULES = ("vidur_files.py", "_interp.py", "fit_cache.py")
F = TypeVar("F", bound=Callable[..., Any])


def cache_dir() -> Path | None:
    """Where fitted pieces are kept; None when caching is off."""
    where = cache_root()
    return None if where is None else where / "latency-fits"


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _FIT_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


#: ``{"<path>|<size>|<mtime_ns>|<ctime_ns>|<inode>": sha256}``: a profile file's content digest,
#: remembered under its stat signature so that a start does not read and hash the profile CSVs
#: again (4 MB, ten milliseconds for the Vidur A100 profile). Any write to a file changes its
#: ctime (which, unlike mtime, cannot be set back), so a changed file is hashed again.
_DIGESTS = "file-digests.json"


def _stat_key(path: str, stat: os.stat_result) -> str:
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"


@functools.lru_cache(maxsize=4)
def _digest_memo(where: Path) -> dict[str, str]:
    try:
        memo = json.loads((where / _DIGESTS).read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in memo.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(memo, dict) else {}


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, stat_key: str, where: Path | None = None) -> str:
    """The SHA-256 of ``path``'s content; with ``where`` (the cache directory) remembered there by
    ``stat_key`` (:func:`_stat_key`)."""
    memo = _digest_memo(where) if where is not None else None
    if memo is not None and stat_key in memo:
        return memo[stat_key]
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if memo is not None:
        memo[stat_key] = digest
        mine = {k: v for k, v in memo.items() if k.split("|", 1)[0] != path or k == stat_key}  # drop stale ones
        memo.clear()
        memo.update(mine)
        write_atomically(where / _DIGESTS, json.dumps(mine, sort_keys=True).encode())
    return digest


def disk_cached(fn: F) -> F:
    """Cache ``fn(path, *args)`` (``path`` a profile file, ``args`` hashable and repr-stable)."""

    @functools.wraps(fn)
    def cached(path: str, *args: Any) -> Any:
        where = cache_dir()
        if where is None:
            return fn(path, *args)
        digest = _file_digest(path, _stat_key(path, os.stat(path)), where)
        key = hashlib.sha256(repr((fn.__qualname__, args, digest, _code_version())).encode()).hexdigest()[:40]
        return _load_or_compute(where / f"{fn.__name__}-{key}.pkl", lambda: fn(path, *args))

    return cached  # type: ignore[return-value]


def _load_or_compute(entry: Path, compute: Callable[[], Any]) -> Any:
    """The value pickled in ``entry``, or ``compute()`` stored there (atomically) for next time."""
    try:
        return pickle.loads(entry.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        pass  # no entry yet, or one this code cannot read: compute it
    result = compute()
    write_atomically(entry, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return result


def cached_by_content(name: str, inputs: Any, compute: Callable[[], Any], *, code: tuple[str, ...] = ()) -> Any:
    """``compute()``, cached under a key made of ``inputs``' pickled bytes (fitted pieces, numbers)
    and the code of this package's fitting modules plus ``code`` (more module file names here):
    for what is derived from fitted pieces, such as the Vidur model's prediction tables."""
    where = cache_dir()
    if where is None:
        return compute()
    here = Path(__file__).parent
    digest = hashlib.sha256(pickle.dumps(inputs, protocol=pickle.HIGHEST_PROTOCOL))
    digest.update(_code_version().encode())
    for module in code:
        digest.update((here / module).read_bytes())
    return _load_or_compute(where / f"{name}-{digest.hexdigest()[:40]}.pkl", compute)
