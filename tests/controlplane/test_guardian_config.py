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


def test_a_planner_naming_an_undeclared_guardian_is_refused_at_the_start_naming_the_key():
    # `guardian: jduge` beside a declared judge only warned: every check answered 'unavailable', which
    # fails open, and the run looked guarded
    from controlplane.errors import ConfigError
    from controlplane.testing import make_config
    from sim.run_checks import checked_run_config

    def start(guardians, **settings):
        cfg = make_config(plugins={"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                                               "static-memory", "cascade-guardian", "sampled-guardian",
                                               "builtin-latency-models"],
                                   "settings": settings}, guardians={"models": [{"name": g} for g in guardians]})
        return checked_run_config(cfg, simulated=False, warn=lambda _: None, database=False)

    cascade = {"screen": ["screen"], "judge": ["judge"]}
    with pytest.raises(ConfigError, match=r"plugins.settings.sampled-guardian.guardian: guardian\(s\) 'jduge' not "
                                          r"declared in guardians.models \(declared: judge, screen\)"):
        start(["judge", "screen"], **{"sampled-guardian": {"rate": 0.5, "guardian": "jduge"},
                                      "cascade-guardian": cascade})
    with pytest.raises(ConfigError, match=r"plugins.settings.sampled-guardian.guardians: guardian\(s\) 'jduge'"):
        start(["judge", "screen"], **{"sampled-guardian": {"rate": 0.5, "guardians": ["judge", "jduge"]},
                                      "cascade-guardian": cascade})
    with pytest.raises(ConfigError, match=r"plugins.settings.cascade-guardian.screen: guardian\(s\) 'screen'"):
        start(["judge"], **{"cascade-guardian": {"judge": ["judge"]}})  # the default screen, never declared
    start(["judge", "screen"], **{"sampled-guardian": {"rate": 0.5, "guardian": "judge"}, "cascade-guardian": cascade})
    start(["judge", "screen"], **{"sampled-guardian": {"rate": 0.0, "guardian": "jduge"}, "cascade-guardian": cascade})
    start([], **{"sampled-guardian": {"rate": 0.5, "guardian": "anything"}})  # none declared: the simulator's default
