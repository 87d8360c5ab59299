"""benchmarks/autoscaling_window_needs.py: each window's own static need against static peak."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("autoscaling_window_needs", ROOT / "benchmarks" / "autoscaling_window_needs.py")
needs_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(needs_bench)


def test_each_window_gets_the_fewest_count_that_meets_the_target_alone(capsys):
    args = ["--window-end", "300", "--max-replicas", "4", "--cold-start", "5", "--window", "120"]
    assert needs_bench.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["window_s"] == 120.0 and result["needs"]
    assert all(1 <= n <= 4 for n in result["needs"])  # 1 where nothing arrives
    peak = result["static_peak"]
    assert 1 <= peak["replicas"] <= 4 and peak["gpu_hours"] > 0
    assert result["share_of_static_peak"] == round(result["replica_hours"] / peak["gpu_hours"], 3)
    # capped at static peak's count, as the clairvoyant bound: the same where no window needs more
    assert result["replica_hours_capped"] <= result["replica_hours"]
    if max(result["needs"]) <= peak["replicas"]:
        assert result["replica_hours_capped"] == pytest.approx(result["replica_hours"])
    rows = [line for line in out if line.strip()[:1].isdigit()]  # one row per window
    assert len(rows) == len(result["needs"])
    # a window's need, replayed alone at that count, meets the target; one fewer (if tried) does not
    first = rows[0].split()
    assert int(first[1]) == result["needs"][0]


@pytest.mark.parametrize("option", [["--suite"], ["--policies", "hpa"], ["--find-scale", "2"], ["--match"],
                                    ["--set", "hpa.target=4"], ["--clairvoyant"], ["--no-static"]])
def test_the_policies_options_are_not_taken_and_help_does_not_list_them(option, capsys):
    """It reused benchmarks/autoscaling.py's parser: --help listed these and a run ignored them silently."""
    assert option[0] not in needs_bench.parser().format_help()
    with pytest.raises(SystemExit) as exited:
        needs_bench.main(option)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.splitlines() == [
        f"autoscaling_window_needs.py: error: unrecognized arguments: {' '.join(option)}"]


@pytest.mark.parametrize("option", [["--limit", "100"], ["--rate-profile", "0:1,60:2"]])
def test_limit_and_rate_profile_are_refused_and_help_says_so(option, capsys):
    help_text = " ".join(needs_bench.parser().format_help().split())
    assert f"{option[0]} {'LIMIT' if option[0] == '--limit' else 'T:F,...'} refused here: each window" in help_text
    with pytest.raises(SystemExit) as exited:
        needs_bench.main(option)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and f"{option[0]} is not taken here" in err
