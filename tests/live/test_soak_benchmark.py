"""benchmarks/soak.py: a bad option is one line naming it, exit 2, before the daemon starts (not after)."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.fixtures.benchmarks import ROOT, never_called, refusal

sys.path.insert(0, str(ROOT / "benchmarks"))
bench = importlib.import_module("soak")  # (by name: a dataclass in it needs its module)


@pytest.mark.parametrize(("argv", "option"), [
    (["--seconds", "5", "--rps", "0"], "--rps"),  # (started the daemon, ~20 s, then a ZeroDivisionError)
    (["--seconds", "0"], "--seconds"),
    (["--minutes", "-1"], "--minutes"),
    (["--max-requests", "0"], "--max-requests"),
    (["--max-tokens", "0"], "--max-tokens"),
    (["--mix-invalid", "-0.1"], "--mix-invalid"),
    (["--mix-normal", "0", "--mix-stream", "0", "--mix-cancel", "0", "--mix-invalid", "0"], "--mix-normal"),
    (["--workers", "0"], "--workers"),
    (["--rss-every", "inf"], "--rss-every"),
    (["--pool", "fork"], "--pool"),
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "daemon", never_called)
    assert option in refusal(bench, argv, capsys)
