"""`sim.latency.registry`: a lazily imported factory that cannot load, or loads something that is
not callable, is an error naming its ``module:attribute`` (a config error in a replay)."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.errors import ConfigError
from sim.latency.registry import BUILTIN_LATENCY_MODELS, LazyFactory


def test_a_lazy_factory_that_is_not_callable_names_its_path():
    with pytest.raises(TypeError, match=r"latency model factory 'math:pi' is a float, not callable"):
        LazyFactory("math:pi")()


@pytest.mark.parametrize("path", ["no_such_module_xyz:Model", "math:no_such_attribute"])
def test_a_lazy_factory_that_fails_to_load_names_its_path(path):
    with pytest.raises(LookupError, match=f"latency model factory '{path}' failed to load"):
        LazyFactory(path)()


def test_the_built_in_lazy_factories_load():
    for factory in BUILTIN_LATENCY_MODELS.values():
        if isinstance(factory, LazyFactory):
            assert callable(factory.target)


def test_a_replay_on_a_factory_that_is_not_callable_is_a_config_error():
    from controlplane.testing import make_trace, replay_with

    class Pi(Plugin):
        name = "pi-latency"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("pi", LazyFactory("math:pi"))

    with pytest.raises(ConfigError, match=r"cluster\.models\[default\]\.latency: latency model factory 'math:pi' "
                                          r"is a float, not callable"):
        replay_with(Pi(), trace=make_trace(2), cluster={"models": [{"name": "default", "latency_model": "pi"}]})


def test_a_misspelt_latency_model_suggests_the_registered_one():
    from controlplane.testing import replay_with, make_trace
    from sim.latency.registry import make_latency_model

    with pytest.raises(ConfigError, match=r"cluster\.models\[default\]\.latency_model: unknown latency model "
                                          r"'rooflin' \(did you mean 'roofline'\?\); registered: "):
        replay_with(trace=make_trace(2), cluster={"models": [{"name": "default", "latency_model": "rooflin"}]})
    with pytest.raises(ValueError, match=r"unknown latency model 'lineer' \(did you mean 'linear'\?\); valid: "):
        make_latency_model("lineer")


def test_a_refused_latency_model_stores_no_failed_run(tmp_path):
    """The latency models are built before the run row is written: an unknown one is the config's
    error alone, not a `failed` run in `runs list` beside it."""
    from controlplane.storage import list_runs, make_engine
    from controlplane.testing import make_trace, replay_with

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(ConfigError, match="unknown latency model 'nosuch'"):
        replay_with(trace=make_trace(2), db_url=url,
                    cluster={"models": [{"name": "default", "latency_model": "nosuch"}]})
    replay_with(trace=make_trace(2), db_url=url)
    assert [r["status"] for r in list_runs(make_engine(url))] == ["finished"]
