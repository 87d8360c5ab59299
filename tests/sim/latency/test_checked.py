"""A plugin's latency model giving a time that is not a finite number >= 0 fails the run, naming the model, the
deployment and the value (`sim.latency.checked`); the built-in models are not wrapped."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane import Plugin, hookimpl
from controlplane.storage import get_run, make_engine
from controlplane.testing import make_config, make_trace
from sim.latency.base import LatencyModel
from sim.latency.checked import CheckedLatencyModel, LatencyTimeError, checked
from sim.latency.linear import LinearLatencyModel
from sim.replay import build_latency_models, replay


def _plugin(iteration: object, decode: object = None) -> Plugin:
    class Custom(LatencyModel):
        name = "custom"
        max_context = 4096

        def iteration_s(self, shape):
            return iteration

        if decode is not None:
            def decode_run_s(self, decode_context_tokens, num_iterations):
                return np.full(num_iterations, decode)

    class Register(Plugin):
        name = "custom-latency"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("custom", Custom)

    return Register()


def _config(tmp_path):
    return make_config(cluster={"models": [{"name": "chat", "latency_model": "custom"}]},
                       storage={"url": f"sqlite:///{tmp_path / 'runs.db'}"})


@pytest.mark.parametrize("iteration, decode, value, why", [
    (float("nan"), None, "nan", "not finite"),  # (was a `finished` run, its completed rows without finish_s)
    (-0.58, None, "-0.58", "negative"),  # (was SimPy's bare "Negative delay -0.58")
    (None, None, "None", "a NoneType, not a number"),  # (was a TypeError from an addition)
    ("0.01", None, "'0.01'", "a str, not a number"),
    (0.01, float("nan"), "nan", "not finite"),  # decode_run_s's array checked too
    (0.01, -1.0, "-1.0", "negative"),
])
def test_a_bad_iteration_time_fails_the_run_naming_the_model_the_deployment_and_the_value(
        tmp_path, iteration, decode, value, why):
    config = _config(tmp_path)
    with pytest.raises(LatencyTimeError) as raised:
        replay(make_trace(50), config, extra_plugins=[_plugin(iteration, decode)])
    text = str(raised.value)
    assert text.startswith("latency model 'custom' (Custom) of deployment 'chat' (cluster.models[chat]) gave ")
    assert f" gave {value} from " in text and f": {why}; an iteration time must be a finite number of seconds >= 0" \
        in text
    run = get_run(make_engine(config.storage.url), 1)
    assert run["status"] == "failed" and "LatencyTimeError: latency model 'custom'" in run["summary"]["error"]


def test_a_good_plugin_model_replays_as_before_and_keeps_its_attributes(tmp_path):
    config = _config(tmp_path)
    summary, session = replay(make_trace(50), config, extra_plugins=[_plugin(0.01, 0.002)])
    assert summary["num_completed"] == 50
    models = build_latency_models(session)
    assert isinstance(models["chat"], CheckedLatencyModel) and models["chat"].max_context == 4096
    assert models["chat"].decode_run_s([10, 20], 3).tolist() == [0.002] * 3


def test_built_in_models_are_not_wrapped():
    from controlplane.session import RunSession

    model = LinearLatencyModel()
    assert checked(model, "linear", "default") is model
    models = build_latency_models(RunSession(make_config(), mode="sim", record=False))
    assert type(models["default"]) is LinearLatencyModel
