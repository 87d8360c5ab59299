"""Sweeps of one spec started together into one SQLite file (`sim.sweep.resume_claim`): all resumed the first's
sweep, the second to store a point died on ``IntegrityError: UNIQUE constraint failed: run.sweep_id,
run.sweep_key``, its half-started run left ``running`` without a sweep (then marked crashed as a lost replay)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import func, select, update

from controlplane.storage import ensure_schema, make_engine
from controlplane.storage.models import Run, Sweep
from controlplane.storage.owner import process_marker
from sim.sweep import load_spec, run_sweep
from sim.sweep.lock import SweepBusy
from sim.sweep.store import create_or_resume, store_outcome
from sim.sweep.worker import RunOutcome, RunTask
from tests.storage.conftest import pg_admin, pg_url  # noqa: F401 (fixtures)

SPEC = {"name": "c", "trace": {"limit": 60}, "seeds": [0], "record": "summary",
        "space": {"cluster.models.0.replicas": [1, 2]}}


def _state(engine) -> tuple:
    with engine.connect() as conn:
        return (conn.execute(select(Sweep.status)).scalars().all(),
                conn.execute(select(Run.status, Run.sweep_id).order_by(Run.id)).all())


def test_a_sweep_another_live_process_runs_is_refused_untouched_then_resumed_once_it_is_gone(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    first = run_sweep(loaded, db, backend="serial")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    engine = make_engine(db)
    try:
        with engine.begin() as conn:  # (as that process's sweep claims it while it runs)
            spec = conn.execute(select(Sweep.spec)).scalar_one()
            conn.execute(update(Sweep).values(status="running", spec={**spec, "process": process_marker(other.pid)}))
        before = _state(engine)
        with pytest.raises(SweepBusy, match=rf"^sweep {first.sweep_id} \(this spec, this trace\) is being run by "
                                            rf"another process right now \(pid {other.pid} on .+\); .* or add --fresh"):
            run_sweep(loaded, db, backend="serial")
        assert _state(engine) == before  # nothing deleted or rewritten
        fresh = run_sweep(loaded, db, backend="serial", fresh=True)  # a separate sweep is no one else's
        assert fresh.sweep_id != first.sweep_id and fresh.ran == 2
    finally:
        other.kill()
        other.wait()
    with engine.begin() as conn:
        conn.execute(update(Sweep).where(Sweep.id == fresh.sweep_id).values(spec_hash="another"))
    again = run_sweep(loaded, db, backend="serial")  # its process gone: marked crashed, then resumed
    assert (again.sweep_id, again.resumed, again.skipped, again.ran) == (first.sweep_id, True, 2, 0)
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'runs.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_a_point_stored_meanwhile_by_another_process_leaves_no_run_behind(db_url):
    engine = make_engine(db_url)
    ensure_schema(engine)
    sweep_id, _ = create_or_resume(engine, name="s", kind="grid", spec={"seeds": [0]}, spec_hash="h", trace=None,
                                   num_runs=1)
    task = RunTask(key="k1", index=0, seed=0, overrides={}, config={}, trace_id="seed=0")
    store_outcome(engine, sweep_id, RunOutcome(task, "finished", {"slo_attainment": 1.0}))
    with pytest.raises(SweepBusy, match=rf"^sweep {sweep_id}'s run of point k1 was stored meanwhile by another "
                                        r"process: .* or add --fresh to start a separate sweep$"):
        store_outcome(engine, sweep_id, RunOutcome(task, "finished", {"slo_attainment": 1.0}))
    with engine.connect() as conn:  # the second run's row deleted: nothing left running, to be marked crashed
        assert conn.execute(select(Run.status, Run.sweep_key)).all() == [("finished", "k1")]
    engine.dispose()


_SWEEP = textwrap.dedent("""
    import json, sys
    from sim.sweep import load_spec, run_sweep
    from sim.sweep.lock import SweepBusy
    try:
        r = run_sweep(load_spec(data=json.loads(sys.argv[1])), sys.argv[2], backend="serial")
        print(json.dumps({"sweep": r.sweep_id, "ran": r.ran, "skipped": r.skipped}))
    except SweepBusy as exc:
        print(json.dumps({"busy": str(exc)}))
""")


def test_three_sweeps_of_one_spec_started_together_never_collide(tmp_path):
    import json

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _SWEEP, json.dumps(SPEC), db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    said = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert sum(s.get("ran", 0) for s in said) >= 2, said  # each point ran once at least, none twice in a sweep
    assert all("busy" in s or s["ran"] + s["skipped"] == 2 for s in said), said
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Run).where(Run.status != "finished")).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(Run).where(Run.sweep_id.is_(None))).scalar_one() == 0
        assert set(conn.execute(select(Sweep.status)).scalars()) == {"finished"}
    engine.dispose()
