"""The command-line tests' set-up: consoles wide enough for one-line output, and no CONTROLPLANE_ settings
from the environment (each test file asks for the ones it needs with ``pytest.mark.usefixtures``)."""

from __future__ import annotations

import os

import pytest

from controlplane.cli import common


@pytest.fixture
def wide_consoles(monkeypatch):
    """Rich wraps at 80 columns when not on a terminal; tables and paths must stay on one line."""
    for console in (common.out, common.err):
        monkeypatch.setattr(console, "_width", 400)


@pytest.fixture
def no_controlplane_env(monkeypatch):
    """No ``CONTROLPLANE_*`` variable of the shell running the tests reaches the commands."""
    for key in list(os.environ):
        if key.startswith("CONTROLPLANE_"):
            monkeypatch.delenv(key)
