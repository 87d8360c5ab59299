"""BulkInsert: the compiled-insert fast path writes what SQLAlchemy's own executemany would."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, insert, select

from controlplane.storage.bulk import BulkInsert
from controlplane.storage.models import UTCDateTime


def test_other_column_types_still_get_their_bind_processors(engine: Engine) -> None:
    metadata = MetaData()
    table = Table(
        "bulk_probe",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", UTCDateTime),
        Column("name", String),
        Column("x", Float),
    )
    metadata.create_all(engine)
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    rows = [{"at": at + timedelta(seconds=i), "name": f"n{i}", "x": i / 2} for i in range(3)] + [
        {"at": None, "name": None, "x": None}
    ]
    fields = ("name", "x", "at")  # any order of the columns
    bulk = BulkInsert(table, engine.dialect, fields)
    tuples = [tuple(row[f] for f in fields) for row in rows]
    with engine.begin() as conn:
        bulk.execute(conn, tuples)
        conn.execute(insert(table), rows)
        stored = conn.execute(select(table.c.at, table.c.name, table.c.x).order_by(table.c.id)).all()
    assert stored[:4] == stored[4:], "identical to SQLAlchemy's own executemany"
    assert stored[0] == (at, "n0", 0.0) and stored[0][0].tzinfo == timezone.utc
    assert stored[3] == (None, None, None)
    assert tuples[0][2] is not None and tuples[0][2].tzinfo != timezone.utc, "caller's rows are untouched"


def test_fields_must_be_the_columns(engine: Engine) -> None:
    import pytest

    table = Table("bulk_probe2", MetaData(), Column("id", Integer, primary_key=True), Column("name", String))
    with pytest.raises(ValueError, match="not the columns"):
        BulkInsert(table, engine.dialect, ("name", "extra"))


def test_many_rows_go_in_whole_and_in_order(engine: Engine) -> None:
    """More rows than one multi-row statement holds (SQLite), and a remainder: every row, in order."""
    table = Table("bulk_probe3", MetaData(), Column("id", Integer, primary_key=True), Column("name", String),
                  Column("x", Float), Column("n", Integer))
    table.metadata.create_all(engine)
    bulk = BulkInsert(table, engine.dialect, ("n", "name", "x"))
    rows = [(i, None if i % 7 == 0 else f"r{i}", i / 3) for i in range(1, 1038)]
    with engine.begin() as conn:
        bulk.execute(conn, rows)
        stored = conn.execute(select(table.c.n, table.c.name, table.c.x).order_by(table.c.id)).all()
    assert [tuple(r) for r in stored] == rows
    if engine.dialect.name == "sqlite":
        assert bulk._multi is not None and bulk._multi[1] > 1, "SQLite inserts many rows per statement"
