"""A sweep is resumed only with the plugin versions its runs were made with (`sim.sweep.resume_versions`): a plugin
changed and bumped 0.1.0 -> 0.2.0 resumed its 0.1.0 sweep, skipped every run and reported 0.1.0's numbers."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select, update

from controlplane.storage import make_engine
from controlplane.storage.models import Run, Sweep
from sim.sweep import load_spec, run_sweep
from sim.sweep.resume_versions import controlplane_version, stored_versions, version_changes

SPEC = {"name": "v", "trace": {"limit": 60}, "seeds": [0], "record": "summary",
        "space": {"cluster.models.0.replicas": [1, 2]}}


class _Info:
    def __init__(self, version):
        self.version = version


def _plugins(**versions):
    return [{"name": "sql-recorder", "dist": None, "version": None},
            *({"name": n, "dist": "controlplane" if n == "least-loaded" else "cp-x", "version": v}
              for n, v in versions.items())]


CONFIG = {"plugins": {"enabled": ["least-loaded", "my-spf"]}}


def test_a_run_made_with_the_versions_loaded_now_has_no_changes():
    cp = controlplane_version()
    available = {"least-loaded": _Info(cp), "my-spf": _Info("0.2.0")}
    run = (CONFIG, _plugins(**{"least-loaded": cp, "my-spf": "0.2.0"}), {})
    assert version_changes([run], available) == []


def test_a_plugin_of_another_version_is_named_once_with_both_versions():
    cp = controlplane_version()
    available = {"least-loaded": _Info(cp), "my-spf": _Info("0.2.0")}
    old = (CONFIG, _plugins(**{"least-loaded": cp, "my-spf": "0.1.0"}), {})
    assert version_changes([old, old], available) == ["my-spf 0.1.0 (this process loads 0.2.0)"]


def test_controlplane_s_version_is_its_built_in_plugins_else_the_notes():
    assert stored_versions(CONFIG, _plugins(**{"least-loaded": "0.0.9", "my-spf": "1"}), {}).controlplane == "0.0.9"
    only_third_party = {"plugins": {"enabled": ["my-spf"]}}
    was = stored_versions(only_third_party, _plugins(**{"my-spf": "1"}), {"controlplane": "0.0.8"})
    assert was == ("0.0.8", {"my-spf": "1"})
    assert version_changes([(only_third_party, _plugins(**{"my-spf": "1"}), {"controlplane": "0.0.8"})],
                           {"my-spf": _Info("1")}) == [f"controlplane 0.0.8 (this process loads {controlplane_version()})"]


def test_a_sweep_whose_runs_were_made_with_another_plugin_version_is_not_resumed(tmp_path, caplog):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    first = run_sweep(loaded, db, backend="serial")
    same = run_sweep(loaded, db, backend="serial")
    assert (same.sweep_id, same.resumed, same.skipped, same.ran) == (first.sweep_id, True, 2, 0)
    engine = make_engine(db)
    with engine.begin() as conn:  # (as if made by an older least-loaded: its rows say 0.0.1)
        for run_id, plugins in conn.execute(select(Run.id, Run.plugins)).all():
            plugins = [{**p, "version": "0.0.1"} if p["name"] == "least-loaded" else p for p in plugins]
            conn.execute(update(Run).where(Run.id == run_id).values(plugins=plugins))
    with caplog.at_level(logging.WARNING, logger="controlplane.sweep"):
        again = run_sweep(loaded, db, backend="serial")
    assert (again.resumed, again.skipped, again.ran) == (False, 0, 2) and again.sweep_id != first.sweep_id
    said = [r.getMessage() for r in caplog.records if "stored runs were made with" in r.getMessage()]
    assert said == [f"sweep {first.sweep_id}'s stored runs were made with least-loaded 0.0.1 (this process loads "
                    f"{controlplane_version()}): not resumed (a sweep holds the runs of one set of plugin versions); "
                    f"sweep {again.sweep_id} runs every point again, sweep {first.sweep_id} is kept as it is"]
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.id, Sweep.status).order_by(Sweep.id)).all() == [
            (first.sweep_id, "finished"), (again.sweep_id, "finished")]  # the old sweep kept as it was
        notes = conn.execute(select(Run.notes).where(Run.sweep_id == again.sweep_id)).scalars().all()
    engine.dispose()
    assert {json.loads(n)["controlplane"] for n in notes} == {controlplane_version()}
    resumed = run_sweep(loaded, db, backend="serial")  # the new sweep's runs are this process's: resumed
    assert (resumed.sweep_id, resumed.resumed, resumed.ran) == (again.sweep_id, True, 0)


def test_a_sweep_made_by_another_controlplane_version_is_not_resumed(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = load_spec(data=SPEC)
    first = run_sweep(loaded, db, backend="serial")
    monkeypatch.setattr("sim.sweep.resume_versions.controlplane_version", lambda: "99.0")
    again = run_sweep(loaded, db, backend="serial")
    assert (again.resumed, again.ran) == (False, 2) and again.sweep_id != first.sweep_id
