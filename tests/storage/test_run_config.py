"""`run_config`: a stored run's config back as a `RunConfig` (the row's holds the run's own facts besides)."""

from __future__ import annotations

import pytest

from controlplane.config import load_config
from controlplane.errors import ConfigError
from controlplane.storage import get_run, make_engine, run_config
from controlplane.storage.queries import RUN_FACTS
from controlplane.testing import make_config, make_trace
from sim.replay import TraceTransforms, replay

_PER_RUN = ("run_id", "wall_s")


def test_a_stored_runs_config_replays_the_same_run(tmp_path):
    """A run's stored `config` fed to load_config was a ConfigError (trace_read, process: extra inputs)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = make_config(storage={"url": url}, name="again", seed=3, slo={"ttft_s": 0.5})
    first = replay(make_trace(30), config, transforms=TraceTransforms(limit=20))
    engine = make_engine(url)
    stored = get_run(engine, first.run_id)["config"]
    assert {"trace_read", "process"} <= set(stored) <= set(RUN_FACTS) | set(config.model_dump())
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
        load_config(None, stored)
    again = run_config(engine, first.run_id)
    assert again.model_dump() == config.model_dump()
    second = replay(make_trace(30), again, transforms=TraceTransforms(**stored["trace_read"]["transforms"]))
    assert {k: v for k, v in second.summary.items() if k not in _PER_RUN} == \
        {k: v for k, v in first.summary.items() if k not in _PER_RUN}
    with pytest.raises(LookupError, match="run 99 not found"):
        run_config(engine, 99)
    engine.dispose()
