"""`runs show` of a live run says what its workers served: model, precision, device, compiled or not (neither it nor
/metrics said which precision or compile mode a live run served)."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.cli.runs import app
from tests.live.conftest import record_timed_live_runs


def test_runs_show_of_a_live_run_says_what_each_kind_of_worker_served(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    models = [{"name": name, "replicas": 1, "worker": {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128,
                                                       "precision": precision}}
              for name, precision in (("a", "fp32"), ("b", "bf16"))]
    ((run_id, _),) = record_timed_live_runs(url, 1, models=models)
    res = CliRunner().invoke(app, ["show", str(run_id), "--db", url], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert ("served: tiny-llama in fp32 on cpu, not compiled (a-0); tiny-llama in bf16 on cpu, not compiled (b-0)"
            in res.output), res.output


def test_a_run_without_ready_workers_says_so_and_a_simulated_one_nothing(monkeypatch):
    from controlplane.cli import runs_served
    from controlplane.live import iteration_log

    monkeypatch.setattr(iteration_log, "workers_meta", lambda engine, run_id, keys: {})
    assert runs_served.served_line(None, {"mode": "sim", "id": 1}) is None
    assert runs_served.served_line(None, {"mode": "live", "id": 1}) == "served: no worker became ready"
    compiled = {"w-1": {"model": "m", "precision": "bf16", "device": "cuda:0", "compiled": True,
                        "compile_mode": "max-autotune"}, "w-0": {"model": "m", "precision": "bf16", "device": "cuda:0"}}
    monkeypatch.setattr(iteration_log, "workers_meta", lambda engine, run_id, keys: compiled)
    assert runs_served.served_line(None, {"mode": "live", "id": 1}) == (  # (a run from before workers said: nothing)
        "served: m in bf16 on cuda:0 (w-0); m in bf16 on cuda:0, compiled (max-autotune) (w-1)")
