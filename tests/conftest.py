"""Suite-wide settings: fitted latency models are cached in a directory of this test session,
not in the user's cache (so the suite neither reads nor leaves entries there)."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("CONTROLPLANE_CACHE_DIR", tempfile.mkdtemp(prefix="cp-fit-cache-"))
