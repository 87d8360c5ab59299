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
