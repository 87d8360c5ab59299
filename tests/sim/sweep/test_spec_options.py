"""A sweep spec's trace reader options, checked when the spec loads (sim/sweep/spec_options.py)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.errors import ConfigError
from sim.sweep import load_spec

LENGTHS = "num_prefill_tokens,num_decode_tokens\n100,10\n200,20\n"


def _spec(tmp_path, trace: dict) -> str:
    (tmp_path / "lens.csv").write_text(LENGTHS)
    path = tmp_path / "badq.yaml"
    path.write_text(yaml.safe_dump({"trace": {"path": "lens.csv", **trace}, "seeds": [0],
                                    "space": {"cluster.models.0.replicas": [1]}}))
    return str(path)


@pytest.mark.parametrize(("trace", "said"), [
    ({"format": "vidur", "options": {"qps": 0}}, "trace.options.qps must be a finite number > 0, got 0"),
    ({"format": "vidur", "options": {"qps": 2, "arrival": "gamma", "cv": 0}},
     "trace.options.cv must be a finite number > 0, got 0"),
    ({"format": "vidur", "options": {"arrival": "weibull"}},
     "trace.options.arrival: unknown arrival 'weibull'; valid choices: poisson, gamma"),
    ({"options": {"qps": -1}}, "trace.options.qps must be a finite number > 0, got -1"),  # (format detected)
])
def test_a_bad_reader_option_value_is_refused_when_the_spec_loads_naming_the_option(tmp_path, trace, said):
    """It was checked only when the sweep read its traces, after its sweep row was stored (`error: qps must be ...`)."""
    spec = _spec(tmp_path, trace)
    with pytest.raises(ConfigError) as caught:
        load_spec(spec)
    assert str(caught.value) == f"{spec}: {said}"


def test_good_reader_options_load(tmp_path):
    loaded = load_spec(_spec(tmp_path, {"format": "vidur", "options": {"qps": 2, "arrival": "gamma", "cv": 3}}))
    assert loaded.spec.trace.options == {"qps": 2, "arrival": "gamma", "cv": 3}


def test_a_sweep_with_a_bad_reader_option_stores_no_sweep_row(tmp_path):
    """The database is not made at all: the spec is refused before it is touched."""
    spec = _spec(tmp_path, {"format": "vidur", "options": {"qps": 0}})
    db = tmp_path / "q.db"
    r = CliRunner().invoke(app, ["sim", "sweep", spec, "--db", f"sqlite:///{db}", "--backend", "serial"])
    assert r.exit_code == 2, r.output
    assert "trace.options.qps must be a finite number > 0, got 0" in r.output
    assert not db.exists()
