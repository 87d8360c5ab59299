"""A sweep stored in PostgreSQL: the same rows and the same resume as on SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controlplane.storage import make_engine
from controlplane.storage.models import Request, Run, Sweep
from sim.sweep import load_spec, run_sweep
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres

SPEC = {"trace": {"limit": 120}, "seeds": [0, 1], "space": {"cluster.models.0.replicas": [1, 2]}}


def test_sweep_on_postgres_stores_and_resumes(pg_url):  # noqa: F811
    loaded = load_spec(data=SPEC)
    first = run_sweep(loaded, pg_url, backend="pool", workers=2)
    again = run_sweep(loaded, pg_url, backend="serial")
    assert (first.ran, again.ran, again.skipped, again.sweep_id) == (4, 0, 4, first.sweep_id)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(Sweep.status)).scalar_one() == "finished"
            assert conn.execute(select(func.count()).select_from(Run).where(Run.sweep_id == first.sweep_id)
                                ).scalar_one() == 4
            assert conn.execute(select(func.count()).select_from(Request)).scalar_one() == 4 * 120
    finally:
        engine.dispose()
