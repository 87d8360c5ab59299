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


def test_who_a_decision_names_as_its_plugin_is_documented():
    """docs/schema.md listed decision.plugin as a plugin's name, core, guardian-pool or daemon, where a
    guardian_verdict row names the guardian that gave the verdict."""
    from controlplane.testing import make_trace, replay_with

    res = replay_with(trace=make_trace(6), guardians={"models": [{"name": "screen"}]},
                      plugins={"enabled": ["sampled-guardian", "least-loaded", "continuous-batching", "fixed-replicas",
                                           "static-memory", "builtin-latency-models"],
                               "settings": {"sampled-guardian": {"rate": 1.0, "guardians": ["screen"]}}})
    verdicts = [d for d in res.decisions if d.action == "guardian_verdict"]
    checks = [d for d in res.decisions if d.action == "guardian_check"]
    assert verdicts and {d.plugin for d in verdicts} == {"screen"} == {d.payload["guardian"] for d in verdicts}
    assert checks and {d.plugin for d in checks} == {"sampled-guardian"}
    decision = _sections()["decision"]
    (row,) = [ln for ln in decision.splitlines() if ln.startswith("| `plugin` |")]
    assert "in a `guardian_verdict` row, the guardian's name" in row
    assert "`<name> (fallback)`" in row and "`guardian-pool`" in row and "`daemon`" in row
