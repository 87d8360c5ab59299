"""docs/schema.md "Reading runs from Python" documents the reader API (`controlplane.storage.queries`), and its
example runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "schema.md"


def _section() -> str:
    m = re.search(r"^## Reading runs from Python\n(.*?)(?=^## |\Z)", DOC.read_text(), re.M | re.S)
    assert m, "docs/schema.md has no section '## Reading runs from Python'"
    return m.group(1)


def test_the_reader_api_is_documented():
    # (get_run, list_runs, iter_rows and export_rows had docstrings, but no doc named them)
    section = _section()
    for name in ("make_engine", "list_runs", "get_run", "iter_rows", "export_rows", "list_sweeps",
                 "SweepResult.runs"):
        assert f"`{name}(" in section, name


def test_the_example_runs():
    blocks = re.findall(r"^<!-- test -->\n```python\n(.*?)^```$", _section(), re.S | re.M)
    assert len(blocks) == 1
    exec(compile(blocks[0], f"{DOC}: Reading runs from Python", "exec"), {"__name__": "docs_schema"})
