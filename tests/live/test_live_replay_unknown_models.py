"""`controlplane live-replay` of a trace naming a model its config does not serve submits those requests to the
config's first model (where `sim replay` rejects them as unknown models), and said nothing: it now says so before
the run, on one ``warning:`` line naming the models, the served ones and the one serving them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import build_app
from sim.traces.canonical import write_canonical
from sim.traces.record import TraceRequest

TINY = {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}


def test_a_live_replay_of_requests_for_a_model_not_served_warns(tmp_path):
    trace = tmp_path / "trace.csv"
    write_canonical([TraceRequest(f"t{i}", 0.05 * i, 12, 2, model="default" if i else "tiny") for i in range(3)],
                    trace, columns=["model"])
    config = tmp_path / "live.yaml"
    config.write_text(json.dumps({"storage": {"url": f"sqlite:///{tmp_path / 'runs.db'}"},
                                  "cluster": {"models": [{"name": "tiny", "replicas": 1, "worker": TINY}]}}))
    res = CliRunner().invoke(build_app(), ["live-replay", str(trace), "--pool", "thread", "--config", str(config),
                                           "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["num_completed"] == 3 and "unknown_models" not in summary  # (served by tiny)
    assert ("warning: 2 of 3 requests name a model the config does not serve: 'default' (2) (served: tiny); a live "
            "replay serves them with the first, tiny (`sim replay` rejects them as unknown models)"
            ) in " ".join(res.stderr.split())
