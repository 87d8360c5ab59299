"""A replay whose trace names models its config does not serve said nothing: 300 of 300 requests rejected
(``unknown model: no deployment serves 'default' (served: tiny-llama)``), stored and shown as any run. The
summary counts them by model (``unknown_models``) and the command says so on one ``warning:`` line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.unknown_models import unknown_models_warning


def _replay(tmp_path, *extra: str):
    rows = ["request_id,arrival_s,prompt_tokens,output_tokens,model"]
    rows += [f"r{i},{0.5 * i},100,10,{('default', 'gpt-x', 'tiny')[i % 3]}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.yaml").write_text("cluster:\n  models: [{name: tiny, replicas: 1}, {name: small, replicas: 1}]\n")
    return CliRunner().invoke(app, ["sim", "replay", str(tmp_path / "t.csv"), "--format", "canonical", "--config",
                                    str(tmp_path / "c.yaml"), "--db", f"sqlite:///{tmp_path / 'r.db'}", *extra])


def test_a_replay_of_requests_for_models_not_served_warns_naming_them(tmp_path):
    said = ("warning: 20 of 30 requests rejected for an unknown model, one no deployment serves: 'default' (10), "
            "'gpt-x' (10) (served: tiny, small)")
    res = _replay(tmp_path, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["unknown_models"] == {"default": 10, "gpt-x": 10} and summary["num_rejected"] == 20
    assert said in " ".join(res.stderr.split())
    text = _replay(tmp_path)
    assert text.exit_code == 0, text.output
    assert said in " ".join(text.stderr.split()) and "stored in" in text.stdout


def test_a_replay_of_served_models_says_nothing_and_stores_no_key(tmp_path):
    res = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--db", f"sqlite:///{tmp_path / 'r.db'}",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert "unknown_models" not in json.loads(res.stdout.strip().splitlines()[-1])
    assert "unknown model" not in res.stderr


def test_the_line_names_the_most_asked_models_first_and_counts_the_rest():
    counts = {f"m{i}": i for i in range(1, 8)}
    line = unknown_models_warning({"num_requests": 100, "unknown_models": counts}, ["a"])
    assert line.startswith("28 of 100 requests rejected for an unknown model, one no deployment serves: 'm7' (7), "
                           "'m6' (6), 'm5' (5), 'm4' (4), 'm3' (3) and 2 more (served: a); serve them")
    assert unknown_models_warning({"num_requests": 3, "unknown_models": {}}, ["a"]) == ""
