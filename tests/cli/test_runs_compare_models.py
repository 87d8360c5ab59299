"""`runs compare` of runs that serve several models: each model's differences beside the aggregate, which
hid opposite moves (one model's attainment falling while the other's rose)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.compare import compare_by_model, load_sample
from controlplane.storage import make_engine
from controlplane.testing import make_config, make_trace, replay_with

CLUSTER = {"models": [{"name": "chat", "replicas": 1}, {"name": "code", "replicas": 1}]}


def _slower(model: str) -> dict:
    """The cluster with ``model``'s decode steps ten times dearer."""
    return {"models": [{**m, "latency": {"decode_s_per_seq": 0.02}} if m["name"] == model else m
                       for m in CLUSTER["models"]]}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run 1: `code` slow; run 2: `chat` slow (the same requests)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cm') / 'runs.db'}"
    trace = [dataclasses.replace(t, model="code" if i % 2 else "chat") for i, t in enumerate(make_trace(160, qps=4))]
    for slow in ("code", "chat"):
        replay_with(trace=trace, config=make_config(cluster=_slower(slow), storage={"url": url}), db_url=url)
    return url


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_each_model_s_differences_have_their_own_intervals(two_runs):
    engine = make_engine(two_runs)
    a, b = load_sample(engine, 1), load_sample(engine, 2)
    by_model = compare_by_model([a], [b], n_resamples=300)
    assert set(by_model) == {"chat", "code"}
    tpot = {m: next(d for d in diffs if d.metric == "tpot" and d.stat == "p50") for m, diffs in by_model.items()}
    assert tpot["chat"].low > 0 and tpot["code"].high < 0  # chat slower in B, code faster: opposite moves
    chat_tpots = b.values["tpot"][b.models == "chat"]
    assert tpot["chat"].b == pytest.approx(np.percentile(chat_tpots[~np.isnan(chat_tpots)], 50))
    assert all(d.method == "paired" for diffs in by_model.values() for d in diffs)


def test_one_model_between_the_runs_gets_no_per_model_comparison(two_runs):
    engine = make_engine(two_runs)
    a = load_sample(engine, 1)
    chat_only = a.of_model("chat")
    assert compare_by_model([chat_only], [chat_only], n_resamples=100) == {}


def test_the_cli_prints_a_table_per_model_and_json_has_by_model(two_runs):
    out = _cli("runs", "compare", "1", "2", "--resamples", "200", "--db", two_runs)
    assert "model chat: B - A" in out and "model code: B - A" in out
    data = json.loads(_cli("runs", "compare", "1", "2", "--resamples", "200", "--json", "--db", two_runs))
    assert set(data["by_model"]) == {"chat", "code"}
    chat = {(d["metric"], d["stat"]): d for d in data["by_model"]["chat"]}
    assert chat[("tpot", "p50")]["diff"] > 0 and chat[("tpot", "p50")]["within_noise"] is False
    assert data["by_model"]["code"][0]["metric"] == "slo_attainment"


def test_without_intervals_each_model_s_summaries_side_by_side(two_runs):
    out = _cli("runs", "compare", "1", "2", "--no-ci", "--db", two_runs)
    assert "run 1: chat" in out and "run 2: code" in out
    data = json.loads(_cli("runs", "compare", "1", "2", "--no-ci", "--json", "--db", two_runs))
    chat = {(d["metric"], d["stat"]): d for d in data["by_model"]["chat"]}
    engine = make_engine(two_runs)
    from controlplane.storage import get_run

    runs = [get_run(engine, r)["summary"]["by_model"]["chat"] for r in (1, 2)]
    assert chat[("tpot", "p50")]["diff"] == pytest.approx(runs[1]["tpot_p50_s"] - runs[0]["tpot_p50_s"])
    assert chat[("tpot", "p50")]["diff"] > 0
