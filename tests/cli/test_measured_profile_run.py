"""A replay on a hand-written measured profile says how far off its fit is and how many iterations it priced past
the profile's rows (`sim replay`: a warning line and the summary's ``iterations_past_profile``), and stores the fit's
error beside the profile's hash, which `runs show` prints; `python -m sim.latency.measured_report` checks a profile
before a run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from sim.latency import measured_report
from tests.sim.latency.test_measured_checks import l40s_rows, write

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


def test_a_replay_reports_the_fit_and_the_iterations_past_the_profile(tmp_path, monkeypatch, caplog):
    write(tmp_path, l40s_rows(), "profile.json")
    (tmp_path / "sim.yaml").write_text("cluster:\n  models:\n    - name: default\n      replicas: 1\n"
                                       "      latency_model: measured\n      latency: {path: profile.json}\n"
                                       "      gpu: l40s\n      precision: int8\n")
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "60", "--config", "sim.yaml", "--db", db, "--json",
                                    "--no-progress"], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    past = summary["iterations_past_profile"]["default"]
    assert 0 < past["outside"] < past["priced"] and past["past"], past
    assert [line for line in done.stderr.splitlines() if "off its own rows by 1.9% at the median, 9.7% at p90" in line]
    (line,) = [m for m in caplog.messages if "were past every row of" in m]  # (the replay's log: a warning line)
    assert line.startswith(f"deployment 'default': {past['outside']:,} of {past['priced']:,} iterations priced "), line
    shown = CliRunner().invoke(app, ["runs", "show", str(summary["run_id"]), "--db", db], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert "latency profile of default: profile.json sha256 " in shown.stdout
    assert "; fit: p90 9.7% off its 38 rows (median 1.9%, worst 51%)" in shown.stdout


def test_measured_report_checks_a_profile(tmp_path, capsys):
    path = write(tmp_path, l40s_rows())
    assert measured_report.main([path]) == 0
    out = capsys.readouterr().out
    assert "rows by kind: prefill-only 6, decode-only 28, mixed 4" in out
    assert "  decode-only: num_decode_seqs 1-64, sum_decode_context 512-262,144" in out
    assert "fit on its rows: median |rel err| 1.9%, p90 9.7%, worst 50.9%" in out
    assert "  row 1: prefill 128 tokens (1 seq): measured 21.23 ms, fitted 32.04 ms (+50.9%)" in out
    assert "  prefill 1 x 8,192 tokens *: 2139 ms" in out and "  prefill 1 x 2,048 tokens: 303.3 ms" in out
    assert "no row prefills over a cached context" in out
    (tmp_path / "bad.json").write_text("{}")
    assert measured_report.main([str(tmp_path / "bad.json")]) == 2
    assert "not a controlplane-profile/1 file" in capsys.readouterr().err
