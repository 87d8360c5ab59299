"""`runs compare` says when the runs' deployments differ: a live CPU tiny-llama run beside a replay of its served
requests on the default config (Llama-3-8B on simulated A100s) compared them silently (TTFT -99%). Other models,
GPUs, or latency models (between simulated runs) get a note on stderr and `deployments_differ` in the JSON;
runs of other policies on one deployment, and the docs/calibration.md recipe (a live run beside a replay on its
measured profile), get none."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.compare_deployments import deployment_differences
from controlplane.hardware.profile_format import write_profile
from controlplane.testing import make_trace
from sim.traces.canonical import write_canonical

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _profile(path) -> None:
    rows = [{"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n, "sum_decode_context": 100 * n,
             "sum_prefill_context": 0, "iteration_s": 0.02 + 0.0005 * n} for n in (1, 2, 4, 8)]
    rows += [{"num_prefill_tokens": t, "num_prefill_seqs": 1, "num_decode_seqs": 0, "sum_decode_context": 0,
              "sum_prefill_context": 0, "iteration_s": 0.02 + 0.0004 * t} for t in (16, 64, 256)]
    write_profile(path, rows, {"model": "tiny-llama", "device": "cpu"})


SIM_YAML = """
cluster:
  models:
    - name: tiny-llama
      replicas: 1
      max_model_len: 2048
      latency_model: measured
      latency: {path: %s}
      gpu: cpu
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: the default config; 2: the calibration recipe's sim.yaml (tiny-llama, cpu, a measured profile);
    3: the default config with another scaling policy's limits and more replicas; 4: run 2's row as a live run of tiny-llama on the CPU
    stores it (what `live-replay` would, without starting a worker); 5: sim.yaml on another profile."""
    from controlplane.live.daemon_config import daemon_config
    from sim.traces.bundled import bundled_default_config_path

    folder = tmp_path_factory.mktemp("deployments")
    db = f"sqlite:///{folder / 'runs.db'}"
    write_canonical(make_trace(40, qps=4), folder / "trace.csv")
    _profile(folder / "profile.json")
    (folder / "sim.yaml").write_text(SIM_YAML % (folder / "profile.json"))
    (folder / "other.json").write_text((folder / "profile.json").read_text().replace('"iteration_s": 0.02', '"iteration_s": 0.03'))
    (folder / "other.yaml").write_text(SIM_YAML % (folder / "other.json"))
    bundled = bundled_default_config_path().read_text()  # (another policy's setting, on the same deployment)
    (folder / "policy.yaml").write_text(bundled.replace("max_replicas: 16", "max_replicas: 2").replace("replicas: 1", "replicas: 2"))
    for config in (None, "sim.yaml", "policy.yaml", "sim.yaml", "other.yaml"):
        args = ["sim", "replay", str(folder / "trace.csv"), "--db", db, "--json", "--no-progress"]
        done = CliRunner().invoke(app, args + (["--config", str(folder / config)] if config else []))
        assert done.exit_code == 0, done.output
    live, _ = daemon_config(None, preset="tiny-llama", workers=1)
    live_config = live.model_dump(mode="json")
    live_config["cluster"]["models"][0]["gpu"] = "cpu"  # (as on a host without CUDA)
    with sqlite3.connect(folder / "runs.db") as conn:
        conn.execute("UPDATE run SET mode = 'live', config = ? WHERE id = 4", (json.dumps(live_config),))
    return db


def _compare(db: str, a: int, b: int, *args: str):
    done = CliRunner().invoke(app, ["runs", "compare", str(a), str(b), "--no-ci", "--db", db, *args])
    assert done.exit_code == 0, done.output
    return done


def test_a_live_cpu_run_beside_the_default_simulated_a100s_is_noted(runs):
    done = _compare(runs, 4, 1)
    said = " ".join(done.stderr.split())
    assert ("note: the runs' deployments differ (models: run 4 tiny-llama, run 1 default; GPUs: run 4 cpu, run 1 "
            "a100-80gb)") in said, said
    assert "replay with a --config of the live deployment" in said and "docs/calibration.md" in said
    found = json.loads(_compare(runs, 4, 1, "--json").stdout)
    assert found["deployments_differ"] is True
    assert found["deployment_differences"] == {"models": {"4": ["tiny-llama"], "1": ["default"]},
                                               "gpus": {"4": ["cpu"], "1": ["a100-80gb"]}}
    assert found["deployments_note"].startswith("note: the runs' deployments differ")


def test_the_calibration_recipe_and_other_policies_get_no_note(runs):
    for a, b in ((4, 2), (2, 4), (1, 3)):  # live beside its measured profile; two policies on one deployment
        done = _compare(runs, a, b)
        assert "deployments differ" not in done.stderr, (a, b, done.stderr)
        found = json.loads(_compare(runs, a, b, "--json").stdout)
        assert found["deployments_differ"] is False and found["deployment_differences"] == {}
        assert found["deployments_note"] is None


def test_simulated_runs_on_other_latency_models_or_profiles_are_noted(runs):
    said = " ".join(_compare(runs, 1, 2).stderr.split())
    assert "latency models: run 1 vidur (" in said and "run 2 measured (path=profile.json sha256 " in said, said
    found = json.loads(_compare(runs, 2, 5, "--json").stdout)["deployment_differences"]
    assert list(found) == ["latency_models"] and "other.json sha256" in found["latency_models"]["5"][0]
    assert "replay with a --config" not in _compare(runs, 2, 5).stderr  # (no live run: no recipe)


def test_several_runs_a_side_and_several_models():
    def run(rid, mode, *models):
        return {"id": rid, "mode": mode, "config": {"cluster": {"models": [
            {"name": n, "gpu": g, "gpus_per_replica": 1, "latency_model": "vidur", "latency": {"gpu": g}}
            for n, g in models]}}}

    same = [run(1, "sim", ("a", "h100-80gb"), ("b", "l4")), run(2, "sim", ("b", "l4"), ("a", "h100-80gb"))]
    assert deployment_differences(same) == {}  # (the config's order of its models does not matter)
    other = run(3, "sim", ("a", "h100-80gb"), ("b", "a100-80gb"))
    found = deployment_differences([*same, other])
    assert found["gpus"]["3"] == ["a: h100-80gb", "b: a100-80gb"] and found["gpus"]["1"] == ["a: h100-80gb", "b: l4"]
    assert "models" not in found
