"""`controlplane runs export RUN --what trace`: a run's requests as a canonical trace that replays its traffic
faithfully; a `--what requests` export read as a trace is read with a warning that it is no trace."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.testing import make_config, make_trace, replay_with
from sim.traces import read_trace
from sim.traces.export_not_trace import ExportNotTraceWarning

#: One slow replica and a queue of 2: many of the requests are rejected (stored with 0 output tokens).
REJECTING = dict(plugins={"enabled": ["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas",
                                      "static-memory", "builtin-latency-models"],
                          "settings": {"queue-limit": {"max_queued": 2}}},
                 cluster={"models": [{"name": "default", "replicas": 1}]})
#: Ids and tenants a spreadsheet reads as formulas: a requests CSV export prefixes them with '.
NAMES = {0: ("-1", "-ops"), 1: ("=2", "@team-a"), 2: ("+3", "+t")}


def _trace():
    trace = make_trace(60, qps=40.0, prompt_tokens=2048, output_tokens=200, seed=4)
    out = []
    for i, r in enumerate(trace):
        rid, tenant = NAMES.get(i, (r.request_id, f"t{i % 3}"))
        out.append(dataclasses.replace(r, request_id=rid, tenant=tenant, model="default", priority=i % 2))
    return out


@pytest.fixture(scope="module")
def rejected_run(tmp_path_factory):
    """A stored run of `_trace` with rejections: its database URL, the trace, the run's summary."""
    tmp = tmp_path_factory.mktemp("trace_export")
    url = f"sqlite:///{tmp / 'runs.db'}"
    trace = _trace()
    result = replay_with(trace=trace, config=make_config(**REJECTING), db_url=url)
    assert result.summary["num_rejected"] > 5
    return url, trace, result.summary


def _fields(r):
    return (r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.model, r.tenant, r.priority)


@pytest.mark.parametrize("name", ["trace.csv", "trace.jsonl.gz"])
def test_a_runs_trace_export_reads_back_as_the_trace_it_replayed(rejected_run, tmp_path, name) -> None:
    """`runs export 1 -o x.csv` read as a trace gave a rejected request 0 output tokens (replayed as 1), and ids
    and tenants such as -1 and -ops the export's ' (read as '-1, '-ops)."""
    url, trace, _ = rejected_run
    path = tmp_path / name
    done = CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "--what", "trace", "-o", str(path)])
    assert done.exit_code == 0, done.output
    assert f"wrote 60 rows to {path}" in done.output
    with _no_export_warning():
        back = list(read_trace(path, format="canonical"))
    assert [_fields(r) for r in back] == [_fields(r) for r in trace]


def test_replaying_a_runs_trace_export_gives_the_run_again(rejected_run, tmp_path) -> None:
    url, _, summary = rejected_run
    path = tmp_path / "trace.csv"
    assert CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "--what", "trace", "-o", str(path)]).exit_code == 0
    again = replay_with(trace=path, config=make_config(**REJECTING)).summary
    for key in ("num_requests", "num_rejected", "num_completed", "output_tokens", "slo_attainment"):
        assert again[key] == summary[key], key


def test_a_runs_trace_export_to_stdout_is_csv_and_json_is_refused(rejected_run, tmp_path) -> None:
    url, trace, _ = rejected_run
    done = CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "--what", "trace"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "request_id,arrival_s,prompt_tokens,output_tokens,model,tenant,priority"
    assert lines[1].startswith("-1,0.0,") and lines[1].endswith(",default,-ops,0")  # (no ' before -1 and -ops)
    for args in (["-o", str(tmp_path / "t.json")], ["--format", "json"]):
        refused = CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "--what", "trace", *args])
        assert refused.exit_code == 2 and "--what trace writes a canonical trace, CSV or JSON Lines" in " ".join(
            refused.output.split())
    assert not (tmp_path / "t.json").exists()
    unknown = CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "--what", "traces"])
    assert unknown.exit_code == 2 and "iterations, trace" in unknown.output


def test_a_trace_export_says_which_output_lengths_it_does_not_know(rejected_run, tmp_path) -> None:
    """Rows stored before revision 0004 have no max_output_tokens: a rejected one's length is unknown."""
    import shutil

    url, _, _ = rejected_run
    copy = tmp_path / "old.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    con = sqlite3.connect(copy)
    con.execute("UPDATE request SET max_output_tokens = NULL")
    rejected = con.execute("SELECT count(*) FROM request WHERE status != 'completed'").fetchone()[0]
    con.commit()
    con.close()
    done = CliRunner().invoke(app, ["runs", "export", "1", "--db", f"sqlite:///{copy}", "--what", "trace", "-o",
                                    str(tmp_path / "t.jsonl")])
    assert done.exit_code == 0, done.output
    assert f"note: {rejected} of the 60 requests did not complete and were stored without" in " ".join(
        done.stderr.split())


@pytest.mark.parametrize("name", ["requests.csv", "requests.jsonl"])
def test_a_requests_export_read_as_a_trace_warns_that_it_is_no_trace(rejected_run, tmp_path, name) -> None:
    url, trace, _ = rejected_run
    path = tmp_path / name
    assert CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "-o", str(path)]).exit_code == 0
    with pytest.warns(ExportNotTraceWarning, match="--what trace` writes a run's requests as a trace") as caught:
        back = list(read_trace(path, format="canonical"))
    assert len(caught) == 1 and ("carry the '" in str(caught[0].message)) == name.endswith(".csv")
    assert any(r.output_tokens == 0 for r in back)  # (what the warning is about: read as written)
    assert (back[0].request_id, back[0].tenant) == (("'-1", "'-ops") if name.endswith(".csv") else ("-1", "-ops"))


def test_sim_replay_of_a_requests_export_says_so_in_one_warning_line(rejected_run, tmp_path) -> None:
    url, _, _ = rejected_run
    path = tmp_path / "requests.csv"
    assert CliRunner().invoke(app, ["runs", "export", "1", "--db", url, "-o", str(path)]).exit_code == 0
    done = CliRunner().invoke(app, ["sim", "replay", str(path), "--format", "canonical", "--db",
                                    f"sqlite:///{tmp_path / 'again.db'}", "--json"])
    assert done.exit_code == 0, done.output
    warned = [line for line in done.stderr.splitlines() if "is a `controlplane runs export --what requests` file" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), done.stderr
    json.loads(done.stdout.strip().splitlines()[-1])


class _no_export_warning:
    """No `ExportNotTraceWarning` within it (a trace export is a trace)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error", ExportNotTraceWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)
