"""benchmarks/autoscaling_anatomy.py: the planner's replica-seconds split by layer and by cause."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("autoscaling_anatomy", ROOT / "benchmarks" / "autoscaling_anatomy.py")
anatomy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(anatomy)

SIGNALS = {"capacity_per_replica_per_s": 1.0, "forecast_per_s": 1.5, "arrivals_per_s": 1.0,
           "forecast_upper_per_s": 3.5, "recent_peak_per_s": 2.0, "needed": 4.0}


def test_the_want_is_split_into_layers_on_top_of_the_point_forecasts_count():
    parts = dict(anatomy.layers(SIGNALS, 5, 1.0))
    # point 1.5/s: 2 replicas; the rate now adds none, the band (3.5/s) 2, the peak none, the burst
    # (needed 4) none, the backlog (wanted 5) 1
    assert parts == {"point": 2, "now": 0, "band": 2, "peak": 0, "burst": 0, "backlog": 1}


def test_kept_counts_are_charged_to_the_layer_that_last_raised_them():
    a = anatomy.Anatomy(startup_s=10.0)
    a.tick(0.0, SIGNALS, 5, 1, 5, 1.0)
    a.tick(20.0, {**SIGNALS, "forecast_upper_per_s": 1.5, "needed": 2.0}, 2, 5, 5, 1.0)  # wants 2, keeps 5
    a.tick(21.0, {**SIGNALS, "forecast_upper_per_s": 1.5, "needed": 2.0}, 2, 5, 4, 1.0)
    s = a.seconds
    assert s["kept: start-up band"] == pytest.approx(2 * 20.0 + 2 * 1.0)  # counts 3 and 4, raised by the band at 0 s
    assert s["kept: start-up backlog"] == pytest.approx(20.0)  # count 5, raised by the backlog
    assert s["kept above the want"] == pytest.approx(3 * 20.0 + 2 * 1.0)
    assert s["current less target"] == pytest.approx(1.0)  # the first tick has no length; then 5 up, 4 asked
    layered = sum(s[k] for k in anatomy.LAYERS) + s["kept above the want"] + s["current less target"]
    assert layered == pytest.approx(s["replica-seconds"])


def test_it_replays_a_suite_setup_with_the_planner_alone(capsys):
    assert anatomy.main(["--setup", "azure-code x0.5", "--window-end", "240"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    row = json.loads(out[-1])  # a table, then one JSON line: the run's row and its replica-hours by row of the table
    assert row["num_requests"] == row["num_completed"] > 0
    hours = {line.split()[0]: float(line.split()[-2]) for line in out[:-1] if line.split()[0] in anatomy.LAYERS}
    assert hours["point"] > 0 and row["replica_hours"]["point"] == pytest.approx(hours["point"], abs=1e-3)
    assert out[0].split()[-2:] == ["replica-h", "share"]


def test_it_replays_a_trace_of_your_own_at_a_rate_scale(tmp_path, capsys):
    from sim.traces import write_canonical
    from sim.traces.record import TraceRequest

    trace = tmp_path / "mine.csv"
    write_canonical([TraceRequest(str(i), 0.5 * i, 300, 40) for i in range(120)], trace)
    assert anatomy.main(["--trace", str(trace), "--format", "canonical", "--rate-scale", "2", "--ttft", "3"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["num_requests"] == row["num_completed"] == 240  # every request twice: the rate scale was applied


def test_a_window_planned_steady_want_is_split_into_its_mean_and_its_error():
    signals = {**SIGNALS, "steady_mean_per_s": 2.5, "steady_rate_per_s": 3.2, "needed": 4.0}
    # the mean 2.5/s: 3 replicas; its error (3.2/s) adds 1; the backlog (wanted 5) 1; the rate now, the forecast
    # band, the peak and the burst are not planned on that load
    assert dict(anatomy.layers(signals, 5, 1.0)) == {"point": 3, "now": 0, "band": 1, "peak": 0, "burst": 0,
                                                     "backlog": 1}


def test_replica_seconds_above_a_count_are_split_by_the_layer_of_each_replica():
    a = anatomy.Anatomy(startup_s=0.0, above=3)
    a.tick(0.0, SIGNALS, 5, 5, 5, 1.0)
    a.tick(10.0, SIGNALS, 5, 6, 5, 1.0)  # the want: point 2, band 2, backlog 1; a sixth replica still up
    s = a.seconds
    assert s["above 3: band"] == pytest.approx(10.0)  # the band's second replica is the fourth
    assert s["above 3: backlog"] == pytest.approx(10.0)
    assert s["above 3: current over target"] == pytest.approx(10.0)
    assert sum(v for k, v in s.items() if k.startswith("above 3")) == pytest.approx((6 - 3) * 10.0)


def test_the_table_lists_the_layers_then_what_was_kept_then_what_ran_above_a_count():
    seconds = anatomy.Counter({"point": 3600.0, "band": 360.0, "kept above the want": 720.0,
                               "replica-seconds": 4680.0, "above 4: kept: band": 36.0, "kept: band": 720.0,
                               "above 4: point": 72.0})
    names = [name for name, _ in anatomy.ordered(seconds)]
    assert names[:9] == [*anatomy.LAYERS, *anatomy.TOTALS]
    assert names[9:] == ["kept: band", "above 4: kept: band", "above 4: point"]  # not mixed
    lines = anatomy.table(seconds).splitlines()
    assert lines[0].split()[-2:] == ["replica-h", "share"]
    assert next(line for line in lines if "point" in line).split()[-2:] == ["1.000", "76.9%"]
