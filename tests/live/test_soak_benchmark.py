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


def test_a_kind_with_no_answer_to_time_shows_a_dash_not_none():
    from rich.console import Console

    sent = [bench.Sent("normal", 0.0, 200, 0.05), bench.Sent("normal", 0.1, 200, 0.07),
            bench.Sent("invalid", 0.2, 400, 0.01), bench.Sent("stream", 0.3, -1, 0.02)]
    console = Console(width=200, record=True)
    console.print(bench.kinds_table(sent, "soak"))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in console.export_text().splitlines() if line.startswith("│")}
    assert rows["invalid"] == ["1", "0", "1", "0", "0", "-", "-"]  # (was None, None)
    assert rows["stream"][-3:] == ["1", "-", "-"] and rows["cancel"] == ["0", "0", "0", "0", "0", "-", "-"]
    assert rows["normal"][-2:] == ["60.0", "69.8"]
