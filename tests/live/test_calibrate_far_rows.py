"""`controlplane calibrate` writing a profile with rows measured far from its fit says so itself, naming the
rows, once (each replay on the profile warns it: the calibration is where to hear it first), with no Python
RuntimeWarning of the fits it makes on the way."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import bench
from controlplane.hardware.profile_format import write_profile
from tests.live.conftest import record_timed_live_runs


def _grid(path, stalled: bool) -> None:
    """A grid profile of the recorded worker (tiny-llama, fp32, CPU), its rows[5] (row 6, 1-based) stalled at 0.3 s or not."""
    rows = []
    for _ in range(3):
        for n in (1, 2, 4, 8):
            rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n,
                         "sum_decode_context": 20 * n, "sum_prefill_context": 0, "iteration_s": 0.004 + 0.0002 * n})
        for seqs in (1, 2):
            for t in (4, 8, 16, 32):
                rows.append({"num_prefill_tokens": t * seqs, "num_prefill_seqs": seqs, "num_decode_seqs": 0,
                             "sum_decode_context": 0, "sum_prefill_context": 0,
                             "iteration_s": 0.005 + 0.0001 * t * seqs + 0.001 * seqs})
    if stalled:
        rows[5]["iteration_s"] = 0.3
    write_profile(path, rows, {"model": "tiny-llama", "device": "cpu", "precision": "fp32", "batching": "padded"})


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('far') / 'live.db'}"
    ((run_id, _),) = record_timed_live_runs(url, 1)
    return url, run_id


@pytest.mark.parametrize("stalled", [True, False])
def test_calibrate_names_the_rows_far_from_the_fit_of_the_profile_it_wrote(timed_run, tmp_path, stalled):
    url, run_id = timed_run
    _grid(tmp_path / "grid.json", stalled)
    out = tmp_path / "profile.json"
    done = CliRunner().invoke(bench.app, ["calibrate", str(run_id), "--db", url, "--profile",
                                          str(tmp_path / "grid.json"), "-o", str(out)], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    said = [line for line in done.stderr.splitlines() if "far from the fit" in line]
    assert "RuntimeWarning" not in done.stderr
    if not stalled:
        assert said == []
        return
    assert len(said) == 1, done.stderr
    assert said[0].startswith(f"warning: {out}: 1 row(s) measured far from the fit (measured / fitted below 1/3 or "
                              "above 3; left out of the per-batch-size factors; rows numbered from 1): row 6 (") and \
        f"each replay on {out} says so too" in said[0], said
