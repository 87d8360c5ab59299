"""A sweep's points as deployments: a key derived from another (``gpus_per_replica`` from
``latency.tensor_parallel``, ``gpu`` from ``latency.gpu``) follows the swept key, and every point is checked as
`sim replay` checks its config before the sweep starts (sim/sweep/spec.py, sim/sweep/spec_checks.py)."""

from __future__ import annotations

import pytest
import yaml

from controlplane.errors import ConfigError
from sim.sweep import load_spec

H100_7B = {"name": "default", "replicas": 2, "latency_model": "roofline",
           "latency": {"model": "meta-llama/Llama-2-7b-hf", "gpu": "h100-80gb"}}


def _spec(tmp_path, space, model=None, **keys):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"cluster": {"models": [model or H100_7B]}}))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"config": "base.yaml", "trace": {"limit": 20},
                                                        "space": space, **keys}))
    return tmp_path / "spec.yaml"


def _deployments(loaded):
    return [loaded.run_config(p.overrides, p.seed)["cluster"]["models"][0] for p in loaded.points()]


def test_sweeping_the_latency_models_tensor_parallel_or_gpu_alone_moves_the_keys_that_follow_it(tmp_path):
    """``space: {cluster.models.0.latency.tensor_parallel: [1, 2]}`` was refused ('latency.tensor_parallel (2) and
    gpus_per_replica (1) disagree ... give it once, as latency.tensor_parallel'), though it gives it once: the base
    config was dumped whole, so its derived gpus_per_replica read as given."""
    loaded = load_spec(_spec(tmp_path, {"cluster.models.0.latency.tensor_parallel": [1, 2]}))
    assert [d["gpus_per_replica"] for d in _deployments(loaded)] == [1, 2]
    loaded = load_spec(_spec(tmp_path, {"cluster.models.0.latency.gpu": ["l4", "h100"]}))
    assert [d["gpu"] for d in _deployments(loaded)] == ["l4", "h100-80gb"]  # (billed as timed)
    assert loaded.base_config["cluster"]["models"][0]["gpu"] == "h100-80gb"  # (the whole base: hashed as before)
    # given in the base too, a point that differs is an error naming the point and both keys
    with pytest.raises(ConfigError, match=r"sweep point \{'cluster.models.0.latency.gpu': 'l4'\}: invalid "
                                          r"configuration: cluster.models.0: latency.gpu \(l4\) and gpu \(h100-80gb\) "
                                          r"disagree"):
        load_spec(_spec(tmp_path, {"cluster.models.0.latency.gpu": ["l4", "h100-80gb"]},
                        {**H100_7B, "gpu": "h100-80gb"}))
    # a spec's own base edits follow the same way
    loaded = load_spec(_spec(tmp_path, {"cluster.models.0.replicas": [1]},
                             base={"cluster.models.0.latency.tensor_parallel": 2}))
    assert _deployments(loaded)[0]["gpus_per_replica"] == 2


LINEAR_7B = {"name": "default", "replicas": 2, "latency_model": "linear", "model_spec": "meta-llama/Llama-2-7b-hf"}


def test_a_point_that_sim_replay_would_refuse_is_refused_before_the_sweep_starts(tmp_path):
    """``cluster.models.0.gpus_per_replica: [1, 2]`` under a roofline model (its default tensor_parallel 1) failed
    every 2-GPU run at its start, mid-sweep; a GPU the memory plan does not know (``a100-40gb``) ran and was stored
    as finished without its memory plan, cost unknown. `sim replay` refuses both: every point is checked so."""
    from controlplane.config import load_config
    from sim.run_checks import checked_run_config
    from sim.sweep.run import run_sweep

    spec = _spec(tmp_path, {"cluster.models.0.gpus_per_replica": [1, 2]})
    with pytest.raises(ConfigError) as exc:
        load_spec(spec)
    assert str(exc.value) == (
        f"{spec}: sweep point {{'cluster.models.0.gpus_per_replica': 2}}: cluster.models[default]: the default "
        "tensor_parallel of latency model 'roofline' (1) and gpus_per_replica (2) disagree: the latency model times a "
        "replica on 1 GPU, while its GPU-seconds, cost and memory plan count 2; give the replica's GPU count once, as "
        "latency.tensor_parallel (gpus_per_replica follows it), or the same number in both")
    spec = _spec(tmp_path, {"cluster.models.0.gpu": ["l4", "a100-40gb"]}, LINEAR_7B)
    with pytest.raises(ConfigError, match=r"spec.yaml: sweep point \{'cluster.models.0.gpu': 'a100-40gb'\}: invalid "
                                          r"configuration:\n  cluster.models.0.gpu: unknown gpu 'a100-40gb' \(did you "
                                          r"mean 'a100-80gb'\?\); known: "):
        load_spec(spec)
    with pytest.raises(ConfigError, match="cluster.models.0.gpu: unknown gpu 'a100-40gb'"):  # (as `sim replay` does)
        checked_run_config(load_config(None, {"cluster": {"models": [{**LINEAR_7B, "gpu": "a100-40gb"}]}}),
                           simulated=True, warn=print, database=False)
    loaded = load_spec(_spec(tmp_path, {"cluster.models.0.gpu": ["l4", "h100-80gb"]}, LINEAR_7B))
    result = run_sweep(loaded, f"sqlite:///{tmp_path / 'ok.db'}", backend="serial")
    assert result.ran == 2 and not result.failed
