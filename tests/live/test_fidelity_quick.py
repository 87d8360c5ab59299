"""benchmarks/fidelity.py --quick (a smoke run, not a measurement) and what --calibration-s sets."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F
_spec.loader.exec_module(F)


def test_quick_sets_a_smoke_runs_settings_and_an_option_given_still_wins(capsys):
    quick = vars(F.parse_args(["--quick"]))
    assert quick["quick"] and {k: quick[k] for k in F.QUICK} == F.QUICK
    assert F.parse_args(["--quick", "--low-s", "5"]).low_s == 5 and F.parse_args(["--low-s", "5", "--quick"]).low_s == 5
    plain = F.parse_args([])
    assert not plain.quick and plain.calibration_s == 60 and plain.scaling_requests == 100 and plain.pool == "process"
    with pytest.raises(SystemExit):
        F.parse_args(["--quick", "--protocol", "in-sample"])
    assert "--quick" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        F.parse_args(["--scaling-requests", "1"])
    assert "--scaling-requests" in capsys.readouterr().err


def test_the_help_says_the_light_run_replays_at_least_the_scaling_requests_and_what_quick_is(capsys):
    with pytest.raises(SystemExit):
        F.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    start = text.index("--calibration-s CALIBRATION_S seconds")  # its help, not the usage line
    cal = text[start:text.index("--scaling-requests SCALING_REQUESTS", start)]
    assert "at least the first --scaling-requests requests" in cal and "runs longer" in cal
    assert "smoke run, not a measurement" in text and "--calibration-s 16.0" in text


def test_the_light_calibration_run_is_half_of_calibration_s_unless_the_scaling_sample_needs_more():
    from fidelity_lib.protocol import light_run_size
    from fidelity_lib.slices import count_for

    # the tester's case: --calibration-s 4 at 2.04/s asked ~2 s; the 100 requests the scaling was fitted on take ~49 s
    n, note = light_run_size(2.04, 4, 100)
    assert n == 100 and "~49 s" in note and "--scaling-requests" in note and "--calibration-s 4" in note
    assert light_run_size(2.04, 4, 2) == (count_for(2.04, 2), "")  # a smaller sample: the light run is ~2 s
    assert light_run_size(10, 60, 100) == (count_for(10, 30), "")  # 301 requests: more than the sample anyway


def test_a_quick_run_end_to_end_is_labelled_a_smoke_run(tmp_path, capsys):
    result = F.main(["--quick", "--db", f"sqlite:///{tmp_path / 'f.db'}", "--profile-out", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert result["smoke_run"] is True and result["target_met"] is None and out.count(F.SMOKE_NOTE) == 2
    assert result["calibration_repeats"] == 1 and result["rounds"] == result["rounds_planned"] == 2
    assert result["rounds_dropped"] == 0 and [d["slice"] for d in result["round_detail"]] == ["low-1", "high-2"]
    assert len(result["capacity_sweep"]) == 2 and result["capacity_points_added"] == 0  # no rate added
    # the light calibration run is half of --calibration-s 16 at its rate (at least the 10 scaling requests)
    text = " ".join(out.split())
    n, rate = re.search(r"light: the trace's first (\d+) requests at ([\d.]+)/s", text).groups()
    n, rate = int(n), float(rate)
    if n > 10:  # ~8 s of arrivals (the printed rate is rounded)
        assert abs(n - 1 - rate * 8) <= 0.6 and "not half of --calibration-s" not in text
    else:
        assert n == 10 and rate * 8 + 1 <= 10.6 and "at least the 10 requests the length scaling" in text
