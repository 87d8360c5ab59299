"""A search spec's GPU prices, checked before any run starts (sim/sweep/spec_prices.py)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

import sim.sweep.search
from controlplane.cli import app
from controlplane.errors import ConfigError
from sim.sweep import load_spec
from sim.sweep.search import search
from sim.sweep.spec_prices import check_gpu_prices

SPEC = {"name": "gpu", "trace": {"format": "azure", "limit": 100}, "seeds": [0],
        "space": {"cluster.models.0.gpu": ["a100-80gb", "a100-40gb"]}}  # (a100-40gb: in the catalogue, no price)


def test_a_search_over_a_gpu_without_a_price_is_refused_before_the_trace_is_read(monkeypatch):
    """It read the trace, then failed on ranking with `error: "no price for GPU ..."` (a KeyError's repr)."""
    monkeypatch.setattr(sim.sweep.search, "read_traces", lambda *a, **k: pytest.fail("the trace was read"))
    with pytest.raises(ConfigError) as caught:
        search(load_spec(data=SPEC), backend="serial")
    assert str(caught.value) == ("sweep spec: sweep point {'cluster.models.0.gpu': 'a100-40gb'}: no price for GPU "
                                 "'a100-40gb': set cluster.gpu_prices.a100-40gb (USD per GPU-hour) in the config "
                                 "(a search ranks its candidates by cost)")


def test_a_price_in_the_base_or_the_space_makes_the_spec_searchable():
    check_gpu_prices(load_spec(data={**SPEC, "base": {"cluster.gpu_prices": {"a100-40gb": 1.9}}}), "s")
    check_gpu_prices(load_spec(data={**SPEC, "space": {"hw": [
        {"cluster.models.0.gpu": "a100-80gb"},
        {"cluster.models.0.gpu": "a100-40gb", "cluster.gpu_prices.a100-40gb": 1.9}]}}), "s")
    with pytest.raises(ConfigError, match=r"^s: base: no price for GPU 'a100-40gb'"):
        check_gpu_prices(load_spec(data={**SPEC, "base": {"cluster.models.0.gpu": "a100-40gb"},
                                         "space": {"cluster.models.0.replicas": [1, 2]}}), "s")


def test_the_cli_names_the_spec_and_quotes_nothing(tmp_path):
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    res = CliRunner().invoke(app, ["sim", "search", str(spec), "--backend", "serial"])
    assert res.exit_code == 2
    said = " ".join(res.stderr.split())
    assert said.startswith(f"error: {spec}: sweep point {{'cluster.models.0.gpu': 'a100-40gb'}}: no price for GPU "
                           "'a100-40gb': set cluster.gpu_prices.a100-40gb"), said
