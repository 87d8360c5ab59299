"""`controlplane runs list`: how each run read its trace (its transforms and format options), in the table and
in --json, so runs that replayed other traffic from the same file are told apart."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import RunRecorder, make_engine, upgrade

TRACE = "/data/AzureLLMInferenceTrace_code.csv"


def _db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:
        for name, read in (("window", {"transforms": {"window_end_s": 600.0}}),
                           ("grown", {"transforms": {"window_end_s": 600.0, "rate_scale": 3.0}}),
                           ("vidur", {"transforms": {"speed_up": 1.5}, "options": {"qps": 2, "arrival": "gamma"}}),
                           ("plain", None)):
            rec.start_run(name=name, mode="sim", trace=TRACE, trace_format="azure", seed=0,
                          config={"trace_read": read} if read else {"process": {}}, plugins=[],
                          started_at=datetime.now(timezone.utc))
        # (a run of a release of revision 0002: its config holds neither trace_read nor the process marker)
        rec.start_run(name="old", mode="sim", trace=TRACE, trace_format="azure", seed=0, config={"seed": 0},
                      plugins=[], started_at=datetime.now(timezone.utc))
    engine.dispose()
    return url


def test_runs_that_read_the_same_file_differently_are_told_apart(tmp_path):
    """`--window-end 600` and `--window-end 600 --rate-scale 3` were two identical rows."""
    res = CliRunner().invoke(app, ["runs", "list", "--db", _db(tmp_path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "AzureLLMInferenceTrace_code.csv (window_end_s=600) " in text
    assert "AzureLLMInferenceTrace_code.csv (window_end_s=600, rate_scale=3) " in text
    assert "AzureLLMInferenceTrace_code.csv (speed_up=1.5, qps=2, arrival=gamma) " in text
    assert "AzureLLMInferenceTrace_code.csv " in text


def test_a_run_whose_release_stored_no_transforms_reads_unknown(tmp_path):
    """A run of revision 0002's releases (no `trace_read` stored, whatever its --limit or window) read as one that
    replayed its trace as it is."""
    url = _db(tmp_path)
    res = CliRunner().invoke(app, ["runs", "list", "--db", url], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[2].strip(): line.split("│")[5].strip() for line in res.output.splitlines() if "│" in line}
    assert rows["old"] == "AzureLLMInferenceTrace_code.csv (transforms unknown)"
    assert rows["plain"] == "AzureLLMInferenceTrace_code.csv"
    shown = CliRunner().invoke(app, ["runs", "show", "5", "--db", url], env={"COLUMNS": "250"})
    assert "trace read: transforms unknown (this run's release did not store how it read its trace)" in shown.output
    plain = CliRunner().invoke(app, ["runs", "show", "4", "--db", url], env={"COLUMNS": "250"})
    assert "trace read" not in plain.output


def test_runs_list_json_has_each_runs_trace_read(tmp_path):
    res = CliRunner().invoke(app, ["runs", "list", "--db", _db(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    read = {r["name"]: r["trace_read"] for r in json.loads(res.output)}
    assert read == {"window": {"transforms": {"window_end_s": 600.0}},
                    "grown": {"transforms": {"window_end_s": 600.0, "rate_scale": 3.0}},
                    "vidur": {"transforms": {"speed_up": 1.5}, "options": {"qps": 2, "arrival": "gamma"}},
                    "plain": None, "old": None}
