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


def _example_queries() -> list[tuple[str, str]]:
    """Each statement of the "Example queries" section's ``sql`` blocks, as ``(backends, statement)``: a block whose
    first line is ``-- SQLite`` or ``-- PostgreSQL`` is that database's form, any other runs on both."""
    text = DOC.read_text()
    section = re.search(r"^## Example queries\n(.*?)(?=^## |\Z)", text, re.M | re.S).group(1)
    out = []
    for block in re.findall(r"^```sql\n(.*?)^```", section, re.M | re.S):
        first = block.splitlines()[0].strip()
        backends = {"-- SQLite": "sqlite", "-- PostgreSQL": "postgresql"}.get(first, "both")
        for part in block.split(";"):
            if "".join(line for line in part.splitlines() if not line.strip().startswith("--")).strip():
                out.append((backends, part.strip()))
    return out


def test_every_example_query_runs_on_both_databases(db_url, tmp_path, monkeypatch):
    """They failed verbatim on PostgreSQL: the GPU-seconds subquery had no alias, the SQLite percentile query
    named a column ``at`` (a keyword there) and read it outside its aggregate, json_extract is SQLite's. Each
    runs on both now, or has its PostgreSQL form beside it; the percentile queries give the summary's value."""
    import json

    from sqlalchemy import text
    from typer.testing import CliRunner

    from controlplane.cli import app
    from controlplane.storage import make_engine

    monkeypatch.chdir(tmp_path)
    replayed = CliRunner().invoke(app, ["sim", "replay", "--limit", "300", "--db", db_url, "--json", "--no-progress"])
    assert replayed.exit_code == 0, replayed.output
    summary = json.loads(replayed.stdout)
    engine = make_engine(db_url)
    backend = engine.dialect.name
    queries = _example_queries()
    assert len(queries) >= 8
    ran = 0
    try:
        for backends, statement in queries:
            if backends not in ("both", backend):
                continue
            with engine.connect() as conn:
                try:
                    rows = conn.execute(text(statement), {"run": summary["run_id"]}).all()
                except Exception as exc:
                    raise AssertionError(f"{backend}: {statement}\n{exc}") from None
            ran += 1
            if "ttft_p90_s" in statement and "FROM request" in statement:  # (numpy.percentile's, as the summary)
                (row,) = rows
                assert abs(float(row.ttft_p90_s) - summary["ttft_p90_s"]) < 1e-6, (statement, row)
            if "gpu_seconds" in statement and "worker_event" in statement:
                assert float(rows[0].gpu_seconds) > 0, statement
    finally:
        engine.dispose()
    assert ran == sum(b in ("both", backend) for b, _ in queries)
