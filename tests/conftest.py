"""Suite-wide settings: fitted latency models are cached in a directory of this test session,
not in the user's cache (so the suite neither reads nor leaves entries there); the directory is
removed when the session ends."""

from __future__ import annotations

import os
import shutil
import tempfile

_MADE: list[str] = []


def pytest_configure(config):
    if "CONTROLPLANE_CACHE_DIR" not in os.environ:
        os.environ["CONTROLPLANE_CACHE_DIR"] = path = tempfile.mkdtemp(prefix="cp-fit-cache-")
        _MADE.append(path)


def pytest_unconfigure(config):
    for path in _MADE:
        if os.environ.get("CONTROLPLANE_CACHE_DIR") == path:
            del os.environ["CONTROLPLANE_CACHE_DIR"]
        shutil.rmtree(path, ignore_errors=True)
    _MADE.clear()
