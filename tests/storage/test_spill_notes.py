"""A spill's note names its database, not the URL's spelling: the next command finds it whatever URL it is given."""

from __future__ import annotations

import json

from controlplane.storage.spill_notes import database_key, note_spill, spills_of


def test_a_note_is_found_by_a_url_spelt_otherwise(tmp_path) -> None:
    """`runs show N --db ...@localhost...` marked a run spilled via 127.0.0.1 crashed, "replay it"."""
    spilled = tmp_path / "controlplane-spill-run3.jsonl"
    spilled.write_text("{}\n")
    note_spill(spilled, [3], database_key("postgresql+psycopg://t_partial:***@127.0.0.1:5432/t_a", None), 10)
    for url in ("postgresql+psycopg://t_partial@localhost:5432/t_a", "postgresql://postgres:pw@localhost/t_a",
                "postgresql+psycopg://other@127.0.0.1/t_a",
                "postgresql+psycopg://t_partial@127.0.0.1:18120/t_a"):  # (another port: pgbouncer, a port-forward)
        assert spills_of(3, database_key(url, None)) == [spilled], url
    for url in ("postgresql+psycopg://t_partial@127.0.0.1:5432/t_b", "postgresql+psycopg://t_partial@db:5432/t_a"):
        assert spills_of(3, database_key(url, None)) == [], url
    assert spills_of(4, database_key("postgresql://localhost/t_a", None)) == []


def test_a_note_of_an_older_version_naming_the_url_is_still_found(tmp_path, _state_dir) -> None:
    spilled = tmp_path / "controlplane-spill-run1.jsonl"
    spilled.write_text("{}\n")
    (_state_dir / "spilled-old.json").write_text(json.dumps(
        {"spill": str(spilled), "run_ids": [1], "database": "postgresql+psycopg://u:***@127.0.0.1:5432/t_a",
         "rows": 2, "created_at": "2025-01-01T00:00:00+00:00"}))
    assert spills_of(1, database_key("postgresql+psycopg://u@localhost:5432/t_a", None)) == [spilled]
    sqlite_file = tmp_path / "runs.db"
    note_spill(spilled, [2], database_key(f"sqlite:///{sqlite_file}", sqlite_file), 1)
    assert spills_of(2, database_key("sqlite:///elsewhere.db", tmp_path / "elsewhere.db")) == []
    assert spills_of(2, database_key(f"sqlite:///{sqlite_file}", sqlite_file)) == [spilled]
