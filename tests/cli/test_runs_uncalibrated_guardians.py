"""A simulated run that priced guardians at the default latency (its summary's `guardian_latency_uncalibrated`)
said so on the replay's stderr and in --json alone: `runs show` now says it on one line, and `runs compare` in a
note when a run of either side has it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import app

GUARDED = """guardians:
  models: [{name: rules, kind: rules, gpus_per_replica: 0}]
plugins:
  settings:
    sampled-guardian: {rate: 1.0, mode: sync, guardian: rules}
"""


def test_runs_show_and_compare_say_which_guardians_were_priced_at_the_default_latency(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "g.yaml").write_text(GUARDED)
    runner = CliRunner()
    for args in (["--config", str(tmp_path / "g.yaml")], []):
        done = runner.invoke(app, ["sim", "replay", *args, "--limit", "20", "--db", db, "--json", "--no-progress"])
        assert done.exit_code == 0, done.output
    said = ("guardian latency uncalibrated: rules (each batch of checks priced at the default latency, not what the "
            "guardian takes")
    shown = runner.invoke(app, ["runs", "show", "1", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert [line for line in shown.stdout.splitlines() if line.startswith("guardian latency")][0].startswith(said)
    assert "guardian latency" not in runner.invoke(app, ["runs", "show", "2", "--db", db]).stdout
    compared = runner.invoke(app, ["runs", "compare", "2", "1", "--db", db, "--no-ci", "--json"])
    assert compared.exit_code == 0, compared.output
    notes = json.loads(compared.stdout)["notes"]
    assert [n for n in notes if "uncalibrated" in n] == [
        "note: guardian latency uncalibrated: run 1's rules (priced at the default latency, not what the guardians "
        "take: their check times, waits and costs compare the default, not the guardians); set "
        "guardians.models[].latency.base_s from a live run's guardians.NAME.mean_check_s (docs/guardians.md, "
        "Calibrating a guardian's latency)"]
    plain = runner.invoke(app, ["runs", "compare", "2", "2", "--db", db, "--no-ci", "--json"])
    assert not [n for n in json.loads(plain.stdout)["notes"] if "uncalibrated" in n]
