"""`controlplane sim sweep`: a run whose cache store (Redis) failed is named in a warning. A sweep with
``record: summary`` showed hit rates falling (0.8993 to 0.8477) during a Redis outage and said nothing of it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from tests.fixtures.common import REDIS_URL

pytest.importorskip("redis")
pytestmark = pytest.mark.usefixtures("wide_consoles")


def test_a_sweep_names_the_runs_whose_cache_store_failed(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"request_id": i, "arrival_s": 0.5 * i, "prompt_tokens": 20,
                                         "output_tokens": 5, "prompt": f"q{i % 4}"}) + "\n" for i in range(40)))
    config = tmp_path / "c.yaml"
    config.write_text("plugins:\n  settings:\n    exact-cache: {backend: redis}\n")
    spec = tmp_path / "sw.yaml"
    spec.write_text(f"config: c.yaml\ntrace: {{path: t.jsonl}}\nrecord: summary\nspace:\n"
                    f"  plugins.settings.exact-cache.redis_url: ['{REDIS_URL}', 'redis://127.0.0.1:1/3']\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--no-progress"])
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "warning: the cache store failed in 1 of 2 runs" in err
    assert "run 2 (seed 0, plugins.settings.exact-cache.redis_url=redis://127.0.0.1:1/3): 1 outage, 20 s down" in err
    assert "run 1 " not in err
    as_json = CliRunner().invoke(app, ["sim", "sweep", str(spec), "--db", db, "--backend", "serial", "--json"])
    runs = json.loads(as_json.stdout)["runs"]  # (resumed: the stored summaries carry it)
    assert "warning: the cache store failed in 1 of 2 runs" in " ".join(as_json.stderr.split())  # (--json too)
    assert [(r["summary"]["cache_store_outages"], r["summary"]["cache_store_down_s"]) for r in runs] == [
        (0, 0.0), (1, 20.0)]
