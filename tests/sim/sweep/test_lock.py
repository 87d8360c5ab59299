"""A sweep another process is running is not resumed by a second one on the same PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controlplane.storage import make_engine
from controlplane.storage.models import Run, Sweep
from sim.sweep import load_spec, run_sweep
from sim.sweep.lock import SweepBusy, SweepLock
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

SPEC = {"trace": {"limit": 60}, "seeds": [0], "space": {"cluster.models.0.replicas": [1, 2]}}


def _state(engine) -> tuple:
    with engine.connect() as conn:
        return (conn.execute(select(Sweep.status)).scalars().all(),
                conn.execute(select(func.count()).select_from(Run)).scalar_one())


@pytest.mark.postgres
def test_a_sweep_held_by_another_process_is_refused_untouched_then_resumed(pg_url):  # noqa: F811
    loaded = load_spec(data=SPEC)
    first = run_sweep(loaded, pg_url, backend="serial")
    engine = make_engine(pg_url)
    other = SweepLock(make_engine(pg_url))  # (another session: what a second process holds)
    try:
        assert other.take(first.sweep_id)
        with pytest.raises(SweepBusy, match=rf"^sweep {first.sweep_id} \(this spec, this trace\) is being run by "
                                            "another process right now; .* or add --fresh"):
            run_sweep(loaded, pg_url, backend="serial")
        assert _state(engine) == (["finished"], 2)  # nothing deleted, the status left as it was
        fresh = run_sweep(loaded, pg_url, backend="serial", fresh=True)  # a separate sweep needs no lock
        assert fresh.sweep_id != first.sweep_id and fresh.ran == 2
        other.release()
        again = run_sweep(loaded, pg_url, backend="serial")
        assert (again.sweep_id, again.resumed, again.skipped) == (fresh.sweep_id, True, 2)
    finally:
        other.release()
        engine.dispose()


@pytest.mark.postgres
def test_a_released_lock_is_free_at_once_though_its_engine_lives_on(pg_url):  # noqa: F811
    # release() gave the connection back to the engine's pool: the database session, and its advisory lock, stayed
    # open until the pool closed it (a second process was refused the sweep meanwhile)
    mine, other = SweepLock(make_engine(pg_url)), SweepLock(make_engine(pg_url))
    try:
        assert mine.take(7) and not other.take(7)
        mine.release()
        assert other.take(7)
    finally:
        mine.release()
        other.release()


def test_sqlite_takes_no_lock(tmp_path):
    lock = SweepLock(make_engine(f"sqlite:///{tmp_path / 'runs.db'}"))
    assert lock.take(1) and lock.take(1)
    lock.release()
