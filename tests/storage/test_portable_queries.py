"""The queries docs/schema.md ("SQLite and PostgreSQL") gives as running on both databases do, and the one it
says fails on PostgreSQL (grouping by a ``json`` column) does."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from controlplane.storage import RunRecorder
from tests.storage.support import decision_row, metric_row, start_run


def _run(engine: Engine) -> None:
    with RunRecorder(engine) as rec:
        start_run(rec)
        for i in range(4):
            rec.add_metric(metric_row(i, labels={"worker": f"w{i % 2}", "model": "m"}))
            rec.add_decision(decision_row(i, is_error=i == 0))
        rec.flush()


def test_the_portable_query_forms_run_on_both(engine: Engine, db_url: str) -> None:
    _run(engine)
    with engine.connect() as conn:
        grouped = conn.execute(text("SELECT name, CAST(labels AS TEXT), count(*) FROM metric_sample "
                                    "GROUP BY 1, 2 ORDER BY 2")).all()
        assert [row[2] for row in grouped] == [2, 2]
        assert grouped[0][1].replace(" ", "") == '{"worker":"w0","model":"m"}'  # (the text as written)
        for where, n in (("is_error", 1), ("NOT is_error", 3), ("is_error = true", 1)):
            assert conn.execute(text(f"SELECT count(*) FROM decision WHERE {where}")).scalar() == n, where
        utc = "2025-06-01 07:59:00" + ("+00" if db_url.startswith("postgres") else "")
        assert conn.execute(text(f"SELECT count(*) FROM run WHERE started_at >= '{utc}'")).scalar() == 1


@pytest.mark.postgres
def test_grouping_by_a_json_column_fails_on_postgresql_and_jsonb_groups_by_value(pg_engine: Engine) -> None:
    _run(pg_engine)
    with pg_engine.connect() as conn, pytest.raises(ProgrammingError, match="equality operator for type json"):
        conn.execute(text("SELECT name, labels, count(*) FROM metric_sample GROUP BY 1, 2")).all()
    with pg_engine.connect() as conn:
        assert len(conn.execute(text("SELECT labels::jsonb FROM metric_sample GROUP BY 1")).all()) == 2
