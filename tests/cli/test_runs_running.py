"""`runs show` of a run still being written (a daemon's, live): no summary table yet, and a line saying so with
the request rows stored so far (it printed the run's header and decisions alone, not saying why)."""

from __future__ import annotations

from sqlalchemy import update
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import make_engine
from controlplane.storage.models import run as run_table
from controlplane.testing import make_config
from tests.fixtures.common import azure_head


def test_a_running_run_says_its_summary_comes_at_its_end_and_counts_its_rows(tmp_path):
    from sim.replay import replay

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = replay(azure_head(20), make_config(storage={"url": url})).run_id
    engine = make_engine(url)
    with engine.begin() as conn:  # as a daemon's run is while it serves: running, no summary, its rows so far
        config = dict(conn.execute(run_table.select().where(run_table.c.id == run_id)).mappings().one()["config"])
        config.pop("process", None)  # (never claimed by a process: left running by the reading command)
        conn.execute(update(run_table).where(run_table.c.id == run_id).values(status="running", summary=None,
                                                                               finished_at=None, config=config))
    engine.dispose()
    res = CliRunner().invoke(app, ["runs", "show", str(run_id), "--db", url], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert ("still running: its summary (counts, latencies, SLO attainment, per-model and guardian tables) is "
            "written when it ends; 20 request rows stored so far (20 completed)") in res.stdout
    done = CliRunner().invoke(app, ["runs", "show", str(replay(azure_head(5), make_config(storage={"url": url}))
                                                        .run_id), "--db", url], env={"COLUMNS": "200"})
    assert done.exit_code == 0 and "still running" not in done.stdout
