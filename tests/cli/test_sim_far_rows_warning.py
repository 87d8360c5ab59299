"""A measured profile's rows far from its fit: `sim replay --config sim.yaml` showed Python's RuntimeWarning, with
its file and source line, twice (the config check builds the latency model, then the run does); it is one
`warning:` line of the command's own now. Other warnings still show as Python shows them."""

from __future__ import annotations

import warnings

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.shown_warnings import shown_once
from controlplane.hardware.profile_format import write_profile
from sim.latency.measured import FarRowsWarning, MeasuredProfileModel

pytestmark = pytest.mark.usefixtures("no_controlplane_env")


def far_row_profile(path) -> None:
    """A profile of exact timings but one: a one-prompt 16-token prefill stalled at 0.5 s (11x its fit)."""
    rows = []
    for n in (1, 2, 4, 8, 16, 32):
        rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n,
                     "sum_decode_context": 300 * n, "sum_prefill_context": 0,
                     "iteration_s": 0.02 + 0.0005 * n + 1e-6 * 300 * n})
    for seqs in (1, 4):
        for tokens in (16, 64, 256, 1024):
            rows.append({"num_prefill_tokens": tokens, "num_prefill_seqs": seqs, "num_decode_seqs": 0,
                         "sum_decode_context": 0, "sum_prefill_context": 0,
                         "iteration_s": 0.02 + 0.0004 * tokens + 0.01 * seqs})
    rows[6]["iteration_s"] = 0.5
    write_profile(path, rows, {"model": "tiny-llama", "device": "cpu"})


def test_sim_replay_says_a_profile_s_far_rows_once_as_its_own_warning(tmp_path, monkeypatch):
    far_row_profile(tmp_path / "profile.json")
    (tmp_path / "sim.yaml").write_text("cluster:\n  models:\n    - name: tiny-llama\n      replicas: 1\n"
                                       "      latency_model: measured\n      latency: {path: profile.json}\n"
                                       "      gpu: cpu\n")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "20", "--config", "sim.yaml", "--db",
                                    f"sqlite:///{tmp_path / 'runs.db'}", "--json", "--no-progress"],
                              env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    lines = [line for line in done.stderr.splitlines() if "measured far from the fit" in line]
    assert lines == ["warning: profile.json: 1 row(s) measured far from the fit (measured / fitted below 1/3 or "
                     "above 3; left out of the per-batch-size factors; rows numbered from 1): row 7 (0.5 s, 11x)"], done.stderr
    assert "RuntimeWarning" not in done.stderr and ".py:" not in done.stderr


def test_other_warnings_are_shown_as_python_shows_them(tmp_path):
    far_row_profile(tmp_path / "profile.json")
    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with shown_once(said.append):
            MeasuredProfileModel.from_file(tmp_path / "profile.json")
            warnings.resetwarnings()  # (a filter changed between two fits: Python would show it again)
            warnings.simplefilter("always")
            model = MeasuredProfileModel.from_file(tmp_path / "profile.json")
            warnings.warn("something else", RuntimeWarning)
    far = [text for text in said if "far from the fit" in text]  # (the profile's other notes: measured_checks)
    assert len(far) == 1 and far[0] == model.far_rows_note and "row 7 (0.5 s, 11x)" in far[0]
    assert len(said) == len(set(said))
    assert [str(w.message) for w in caught] == ["something else"]
    with pytest.warns(FarRowsWarning, match="row 7"):  # (outside it: a warning, as a library caller gets it)
        MeasuredProfileModel.from_file(tmp_path / "profile.json")
