"""docs/schema.md ("Stored schema") documents the run database as `controlplane.storage.models` defines it:
every table, every column (and none that does not exist), the enumerated values, and it is linked."""

from __future__ import annotations

import re
from pathlib import Path

from controlplane.storage.columns import REQUEST_STATUSES, RUN_STATUSES, WORKER_EVENT_KINDS
from controlplane.storage.models import metadata
from controlplane.types import ReasonCode

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "schema.md"


def _sections() -> dict[str, str]:
    """Each table's section (``## `name` `` up to the next ``## ``), by table name."""
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^## `(\w+)`\n(.*?)(?=^## |\Z)", text, re.M | re.S)}


def test_every_table_and_column_is_documented():
    sections = _sections()
    assert set(sections) == {t.name for t in metadata.sorted_tables}
    for table in metadata.sorted_tables:
        columns = re.search(r"^\| column \| type \| meaning \|\n(.*?)(?:\n\n|\Z)", sections[table.name], re.M | re.S)
        assert columns, f"{table.name}: no column table"
        documented = re.findall(r"^\| `(\w+)` \|", columns.group(1), re.M)
        assert len(documented) == len(set(documented)), f"{table.name}: a column documented twice"
        assert set(documented) == {c.name for c in table.columns}, table.name


def test_enumerated_values_are_documented():
    sections = _sections()
    for status in REQUEST_STATUSES:
        assert f"| `{status}` |" in sections["request"], status  # its row in the NULL-per-status table
    for code in ReasonCode:
        assert f"`{code.value}`" in sections["request"], code
    for status in RUN_STATUSES:
        assert f"`{status}`" in sections["run"], status
    for kind in WORKER_EVENT_KINDS:
        assert f"`{kind}`" in sections["worker_event"], kind


def test_the_schema_is_linked_from_the_readme_and_the_architecture():
    assert "docs/schema.md" in (ROOT / "README.md").read_text()
    assert "(schema.md)" in (ROOT / "docs" / "architecture.md").read_text()
