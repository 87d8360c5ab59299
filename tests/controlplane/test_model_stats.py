"""`controlplane.model_stats`: a run of several models has each model's figures in its summary's ``by_model``
(one model's TTFT p99 of 22 s hid in a cluster-wide 1.1 s); a one-model run has none."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.request_latency import latencies
from controlplane.testing import make_config, make_trace, replay_with
from controlplane.types import RequestStatus

CLUSTER = {"models": [{"name": "chat", "replicas": 1, "gpu": "a100-80gb"},
                      {"name": "code", "replicas": 2, "gpu": "h100-80gb", "latency": {"decode_s_per_seq": 0.002}}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('bm') / 'runs.db'}"
    trace = [dataclasses.replace(t, model="code" if i % 3 else "chat") for i, t in enumerate(make_trace(300, qps=8))]
    trace.append(dataclasses.replace(trace[-1], request_id="lost", arrival_s=trace[-1].arrival_s + 0.1, model="nope"))
    return url, replay_with(trace=trace, config=make_config(cluster=CLUSTER, storage={"url": url}), db_url=url)


def test_each_model_s_figures_add_up_to_the_run_s(run):
    _, res = run
    summary, by_model = res.summary, res.summary["by_model"]
    assert set(by_model) == {"chat", "code", "nope"}
    for key in ("num_requests", "num_completed", "num_rejected", "gpu_seconds"):
        assert sum(m[key] for m in by_model.values()) == pytest.approx(summary[key]), key
    assert by_model["nope"]["num_requests"] == by_model["nope"]["num_rejected"] == 1
    assert sum(m["cost_usd"] for m in by_model.values()) == pytest.approx(summary["cost_usd"])
    assert by_model["code"]["peak_replicas"] >= 2 and by_model["chat"]["peak_replicas"] >= 1


def test_each_model_s_percentiles_are_its_own_requests(run):
    _, res = run
    for model in ("chat", "code"):
        done = [r for r in res.requests if r.model == model and r.status is RequestStatus.COMPLETED]
        ttft = [latencies(r.arrival_s, r.scheduled_s, r.first_token_s, r.finish_s, r.output_tokens)[0] for r in done]
        assert res.summary["by_model"][model]["ttft_p99_s"] == pytest.approx(np.percentile(ttft, 99), rel=1e-6)


def test_the_tables_show_a_row_per_model_and_a_one_model_run_has_none(run):
    url, res = run
    shown = CliRunner().invoke(app, ["runs", "show", str(res.run_id), "--db", url], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "by model" in shown.output
    assert all(f"│ {m} " in shown.output for m in ("chat", "code"))
    assert "by_model" not in replay_with(trace=make_trace(20)).summary
