"""Summaries stored by revision 0002's releases (`controlplane.storage.old_summaries`): their GPU-hours and SLO
targets derived from their row, so `runs show` and `runs compare` show them as they do a newer run's."""

from __future__ import annotations

from datetime import datetime, timezone

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import RunRecorder, get_run, list_runs, make_engine, upgrade
from controlplane.storage.old_summaries import NO_PRICES

#: What a release of revision 0002 stored (docs/schema.md's summary without gpu_hours, cost or slo_targets).
OLD_CONFIG = {"seed": 0, "cluster": {"models": [{"name": "default", "gpu": "a100-80gb"}], "max_retries": 2},
              "slo": {"ttft_s": 2.0, "tpot_s": 0.2, "e2e_s": None}}
OLD_SUMMARY = {"num_requests": 300, "num_completed": 300, "slo_attainment": 0.463, "gpu_seconds": 442.0,
               "sim_end_s": 221.0}


def _stored(tmp_path, summary: dict, config: dict = OLD_CONFIG) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        run_id = rec.start_run(name=None, mode="sim", trace="/data/code.csv", trace_format="azure", seed=0,
                               config=config, plugins=[], started_at=datetime.now(timezone.utc))
        rec.finish_run(run_id, status="finished", summary=summary, finished_at=datetime.now(timezone.utc),
                       wall_s=0.1, sim_end_s=221.0)
    engine.dispose()
    return url


def test_an_old_summary_gets_its_gpu_hours_and_slo_targets_from_its_row(tmp_path):
    engine = make_engine(_stored(tmp_path, OLD_SUMMARY))
    summary = get_run(engine, 1)["summary"]
    assert summary == {**OLD_SUMMARY, "gpu_hours": 0.122777778, "slo_targets": {"ttft_s": 2.0, "tpot_s": 0.2},
                       "cost_usd": None, "cost_error": NO_PRICES, "derived_keys": ["gpu_hours", "slo_targets"]}
    assert list_runs(engine)[0]["summary"] == summary
    engine.dispose()


def test_a_summary_that_has_them_and_a_crashed_one_are_as_stored(tmp_path):
    new = {**OLD_SUMMARY, "gpu_hours": 0.1, "cost_usd": 0.3, "slo_targets": {"ttft_s": 1.0}}
    engine = make_engine(_stored(tmp_path, new))
    assert get_run(engine, 1)["summary"] == new
    engine.dispose()
    crashed = {"crashed": True, "requests_recorded": 3}  # (its process died before the summary: no attainment)
    (tmp_path / "crashed").mkdir()
    engine = make_engine(_stored(tmp_path / "crashed", crashed))
    assert get_run(engine, 1)["summary"] == crashed
    engine.dispose()


def test_runs_show_and_compare_show_an_old_run_s_targets_and_gpu_hours(tmp_path):
    """`runs show` printed "SLO attainment" without its targets and no GPU-hours; `runs compare` "GPU-hours -"."""
    url = _stored(tmp_path, OLD_SUMMARY)
    shown = CliRunner().invoke(app, ["runs", "show", "1", "--db", url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = [" ".join(line.replace("│", " ").split()) for line in shown.output.splitlines()]
    assert "SLO attainment (TTFT <= 2 s, TPOT <= 0.2 s) 0.463" in lines and "GPU-hours 0.1228" in lines
    assert f"cost not known {NO_PRICES}" in lines
    compared = CliRunner().invoke(app, ["runs", "compare", "1", "1", "--no-ci", "--db", url], env={"COLUMNS": "200"})
    assert "GPU-hours 0.1228 0.1228 +0 +0.0%" in [" ".join(line.replace("│", " ").split())
                                                 for line in compared.output.splitlines()], compared.output
