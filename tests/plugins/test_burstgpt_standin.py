"""benchmarks/burstgpt_standin.py: the BurstGPT-like stand-ins of the autoscaling rounds."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim.traces import read_trace
from tests.fixtures.benchmarks import refusal

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("burstgpt_standin", ROOT / "benchmarks" / "burstgpt_standin.py")
standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(standin)


def test_a_stand_in_is_a_canonical_trace_with_the_rate_shape_and_burstiness_asked(tmp_path, capsys):
    path = tmp_path / "bg.csv"
    assert standin.main(["2", "2.0", "0.25", "7", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["standin"]
    reqs = list(read_trace(path, "canonical"))
    assert summary["requests"] == len(reqs)
    expected = 2.0 * 7200 * (0.25 + 0.75 * 2 / math.pi)  # the mean count: the cycle's integral
    assert abs(len(reqs) - expected) < 0.1 * expected
    a = np.array([r.arrival_s for r in reqs])
    assert (np.diff(a) >= 0).all() and 0 <= a[0] and a[-1] < 7200
    # a quarter of the peak at the ends, the peak in the middle
    ends, middle = np.sum(a < 900) + np.sum(a >= 6300), np.sum((a >= 3150) & (a < 4950))
    assert 2.0 < middle / ends < 5.0
    # bursty: the inter-arrival CV is near 1 / sqrt(shape) = 2 in the middle hour, where the rate is near flat
    gaps = np.diff(a[(a >= 2700) & (a < 4500)])
    assert 1.6 < gaps.std() / gaps.mean() < 2.4
    prompts = [r.prompt_tokens for r in reqs]
    outputs = [r.output_tokens for r in reqs]
    assert 4 <= min(prompts) and max(prompts) <= 8000 and 500 < np.median(prompts) < 700
    assert 1 <= min(outputs) and max(outputs) <= 2000 and 170 < np.median(outputs) < 230


def test_the_same_arguments_write_the_same_file_and_the_rounds_counts(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for p in (a, b):
        assert standin.main(["0.5", "1.0", "0.3", "3", str(p)]) == 0
    assert a.read_bytes() == b.read_bytes()
    # the counts the rounds' stand-ins had (docs/history/autoscaling.md): the arrivals alone, no file needed
    rng = np.random.default_rng(33)
    assert len(standin.arrivals(5, 2.5, 0.4, rng)) == 32_678  # bgE


@pytest.mark.parametrize("bad", [["0", "1", "0.3", "1"], ["1", "-1", "0.3", "1"], ["1", "1", "inf", "1"]])
def test_a_bad_argument_is_named(tmp_path, bad, capsys):
    with pytest.raises(SystemExit):
        standin.main([*bad, str(tmp_path / "x.csv")])
    assert "must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("out", ["missing-folder/x.csv", "."])
def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path, out, capsys):
    # (a file in a missing folder was a FileNotFoundError traceback)
    with pytest.raises(SystemExit) as exit_:
        standin.run_main(standin.main, ["1", "1", "0.3", "1", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "error: out " in next(line for line in err.splitlines() if "error:" in line)
    assert not (tmp_path / "missing-folder").exists()


def test_a_negative_seed_is_one_line_naming_it(tmp_path, capsys):
    # (was numpy's "expected non-negative integer" traceback)
    line = refusal(standin, ["0.1", "2", "0.3", "-1", str(tmp_path / "neg.csv")], capsys)
    assert "argument seed: must be an integer >= 0, got '-1'" in line
    assert not (tmp_path / "neg.csv").exists()
