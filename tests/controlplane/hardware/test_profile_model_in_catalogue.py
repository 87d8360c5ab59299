"""A measured profile of a model the catalogue knows (meta-llama/Llama-2-7b-hf), with no model_spec: the run's start
warned that the profile's model 'is not a model the catalogue knows', though it is; a profile's model is its label,
not read as the deployment's model_spec (the memory plan and cold start size model_spec's), so the warning says that
and names the model_spec to give."""

from __future__ import annotations

import json

from controlplane.config import load_config
from controlplane.hardware.memory_plan import deployment_cold_start_s
from sim.run_checks import checked_run_config
from tests.sim.latency.test_measured_checks import l40s_rows


def _warnings(deployment: dict) -> list[str]:
    said: list[str] = []
    checked_run_config(load_config(None, {"cluster": {"models": [deployment]}}), simulated=True, warn=said.append,
                       database=False)
    return [s for s in said if s.startswith("cluster.models.0:")]


def test_a_profile_of_a_catalogue_model_names_the_model_spec_to_give(tmp_path):
    path = tmp_path / "a10g.json"
    path.write_text(json.dumps({"format": "controlplane-profile/1", "model": "meta-llama/Llama-2-7b-hf",
                                "device": "a10g", "precision": "fp16", "rows": l40s_rows()}))
    measured = {"name": "m", "latency_model": "measured", "latency": {"path": str(path)}, "num_kv_blocks": 2000}
    assert _warnings(measured) == [
        f"cluster.models.0: model_spec is not given, so the run goes with the default cold start, 30 s (give "
        f"cold_start_s): the measured profile {path}'s model (meta-llama/Llama-2-7b-hf) is a model the catalogue "
        "knows, but the memory plan and cold start size the model_spec's; or give model_spec: "
        "meta-llama/Llama-2-7b-hf to size them from its weights"]
    assert "is not a model the catalogue knows" not in " ".join(_warnings({**measured, "num_kv_blocks": None}))
    given = {**measured, "model_spec": "meta-llama/Llama-2-7b-hf"}
    assert _warnings(given) == []
    assert deployment_cold_start_s(load_config(None, {"cluster": {"models": [given]}}).cluster.models[0]) < 30
