"""The guardians: section of a run config (controlplane.guardian_config)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.guardian_config import GuardiansConfig
from controlplane.testing import replay_with
from sim.traces.record import TraceRequest


def test_a_cpu_guardian_costs_time_but_no_gpu_seconds():
    # rules (or a classifier on a CPU) took a GPU per replica in the simulator: gpus_per_replica >= 1
    spec = {"name": "rules", "kind": "rules", "gpus_per_replica": 0, "latency": {"base_s": 0.5, "max_batch": 1}}
    trace = [TraceRequest(str(i), 0.0, 16, 1) for i in range(3)]
    res = replay_with(trace=trace, guardians={"models": [spec]}, plugins={"settings": {"sampled-guardian": {
        "rate": 1.0, "mode": "sync", "guardian": "rules"}}})
    g = res.summary["guardians"]["rules"]
    assert g["checks"] == 3 and g["busy_s"] == pytest.approx(1.5)
    assert g["gpu_seconds"] == 0 and res.summary["guardian_gpu_seconds"] == 0


def test_a_negative_gpu_count_is_refused_naming_the_key():
    with pytest.raises(ValidationError, match=r"models\.0\.gpus_per_replica"):
        GuardiansConfig(models=[{"name": "g", "gpus_per_replica": -1}])


def test_a_pattern_that_does_not_compile_is_refused_when_the_config_loads():
    # the simulator never runs a rules guardian's patterns: a bad one passed every replay and
    # stopped the daemon only when it started its guardian workers
    with pytest.raises(ValidationError, match=r"models\.0\.patterns\n.*'\(' is not a valid pattern"):
        GuardiansConfig(models=[{"name": "r", "kind": "rules", "patterns": ["ok", "("]}])


def test_a_misspelt_precision_is_refused_naming_the_key():
    with pytest.raises(ValidationError, match=r"models\.0\.precision\n.*'fp32', 'bf16' or 'fp16'"):
        GuardiansConfig(models=[{"name": "j", "precision": "bf61"}])


@pytest.mark.parametrize("kind", ["classifier", "causal-lm"])
def test_a_model_guardian_without_a_model_is_refused_when_the_config_loads(kind):
    # the simulator prices such a guardian without loading anything: it passed every replay and
    # stopped the daemon only after loading the other guardians
    with pytest.raises(ValidationError, match=rf"models\.1\n.*guardian 'clf': kind {kind} needs `model`"):
        GuardiansConfig(models=[{"name": "rules", "kind": "rules"}, {"name": "clf", "kind": kind}])
    GuardiansConfig(models=[{"name": "clf", "kind": kind, "model": "/models/clf"}])  # a path is enough here
