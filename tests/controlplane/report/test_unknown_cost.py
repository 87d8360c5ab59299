"""A report of runs on a GPU type with no price: their cost is not known (`-`, with the reason), as `runs show`
says; the report failed (`error: no price for GPU 'a100-40gb' ...`, exit 2, no file), and `runs report` takes no
config to add the price with."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.report.cost import run_cost, unknown_cost_reason
from controlplane.storage import ensure_schema, make_engine
from sim.sweep.store import create_or_resume, finish_sweep, store_outcome
from sim.sweep.worker import RunOutcome, RunTask


def _config(gpu: str) -> dict:
    return {"name": f"on {gpu}", "cluster": {"models": [{"name": "default", "replicas": 1, "gpu": gpu}]}}


def _summary(gpu: str, attainment: float) -> dict:
    return {"slo_attainment": attainment, "gpu_seconds": 3600.0, "gpu_seconds_by_gpu": {gpu: 3600.0},
            "num_completed": 10}


def test_run_cost_of_an_unpriced_gpu_is_not_known_and_says_why():
    assert run_cost(_config("a100-40gb"), _summary("a100-40gb", 1.0)) is None  # raised NoPriceError
    assert unknown_cost_reason(_config("a100-40gb"), _summary("a100-40gb", 1.0)) == (
        "no price for GPU 'a100-40gb': set cluster.gpu_prices.a100-40gb (USD per GPU-hour) in the config")
    assert run_cost(_config("h100-80gb"), _summary("h100-80gb", 1.0)) == 4.0
    assert unknown_cost_reason(_config("h100-80gb"), _summary("h100-80gb", 1.0)) is None


def test_the_report_of_a_sweep_with_an_unpriced_gpu_is_written_with_its_cost_not_known(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(db)
    ensure_schema(engine)
    sweep_id, _ = create_or_resume(engine, name="np", kind="sweep", spec={"seeds": [0]}, spec_hash="h", trace=None,
                                   num_runs=2)
    for i, (gpu, attainment) in enumerate((("a100-40gb", 0.9), ("h100-80gb", 0.99))):
        overrides = {"cluster.models.0.gpu": gpu}
        task = RunTask(key=f"k{i}", index=i, seed=0, overrides=overrides, config=_config(gpu), trace_id="seed=0")
        store_outcome(engine, sweep_id, RunOutcome(task, "finished", _summary(gpu, attainment)))
    finish_sweep(engine, sweep_id, "finished")
    engine.dispose()
    page = tmp_path / "np.html"
    result = CliRunner().invoke(app, ["runs", "report", "--sweep", str(sweep_id), "--db", db, "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "cost not known (shown <code>-</code>, kept off the Pareto front) for run 1: no price for GPU" in text
    assert "<h2>Pareto front</h2>" in text  # the priced run is on it
    one = tmp_path / "run1.html"
    result = CliRunner().invoke(app, ["runs", "report", "1", "--db", db, "--html", str(one)])
    assert result.exit_code == 0, result.output
    assert "cost not known: no price for GPU &#x27;a100-40gb&#x27;" in one.read_text()
