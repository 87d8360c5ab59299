"""benchmarks/autoscaling_shapes.py: the bundled hour tiled and shaped by a slow rate profile, each setup evaluated
as benchmarks/autoscaling.py evaluates a trace, one JSON line at the end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sim.traces import bundled_trace_path, read_trace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports autoscaling.py as a sibling
_spec = importlib.util.spec_from_file_location("autoscaling_shapes", ROOT / "benchmarks" / "autoscaling_shapes.py")
shapes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes)


@pytest.mark.parametrize("name", list(shapes.SHAPES))
def test_each_shape_peaks_at_one_within_its_span(name):
    points = shapes.SHAPES[name](10000.0)
    times = [t for t, _ in points]
    factors = [f for _, f in points]
    assert times == sorted(times) and times[0] == 0.0 and times[-1] <= 10000.0
    assert max(factors) == pytest.approx(1.0) and min(factors) >= 0.25
    if name == "diurnal":
        assert max(factors) / min(factors) == pytest.approx(4.0)
        assert factors[0] == factors[-1] == min(factors) and factors[len(factors) // 2] == max(factors)


def test_the_shaped_trace_tiles_the_hour_and_follows_the_shape(tmp_path):
    hour = list(read_trace(bundled_trace_path()))
    path = shapes.shaped_trace("azure", "step-up", 1.0, 2, 0, "", tmp_path)
    out = list(read_trace(path, "canonical"))
    assert len({r.request_id for r in out}) == len(out)
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(out, out[1:]))
    first = [r for r in out if ".c1" not in r.request_id]  # the first copy, up to T/2: factor 0.5
    assert abs(len(first) - 0.5 * len(hour)) < 4 * (len(hour) * 0.25) ** 0.5 + 2
    second = [r for r in out if ".c1" in r.request_id]  # the second, after T/2: factor 1, each request once
    assert len(second) == len(hour) and not any(".r" in r.request_id for r in second)
    assert {(r.prompt_tokens, r.output_tokens) for r in out} <= {(r.prompt_tokens, r.output_tokens) for r in hour}
    mtime = path.stat().st_mtime_ns
    assert shapes.shaped_trace("azure", "step-up", 1.0, 2, 0, "", tmp_path) == path  # reused, not rewritten
    assert path.stat().st_mtime_ns == mtime


def test_it_evaluates_each_setup_and_ends_with_one_json_line(capsys, tmp_path):
    out = tmp_path / "runs.jsonl"
    assert shapes.main(["--setups", "azure x0.5 spike", "--hours", "1", "--limit", "300", "--policies", "hpa",
                        "--max-replicas", "2", "--cold-start", "5", "--workdir", str(tmp_path),
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert set(result) == {"azure x0.5 spike"}
    rows = result["azure x0.5 spike"]
    assert set(rows) == {"hpa", "static_peak"}
    for row in rows.values():
        assert {"slo_attainment", "gpu_hours", "scale_events", "oscillations", "gpu_hours_vs_static_peak",
                "cost_usd"} <= set(row)
    assert rows["static_peak"]["gpu_hours_vs_static_peak"] == 1.0
    assert any(line.startswith("slo planner at >= 0.99 within 0.75 of static peak: 0 of 0") for line in printed)
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["setup"] for r in recorded} == {"azure x0.5 spike"} and recorded[0]["policy"] == "hpa"


@pytest.mark.parametrize("argv, message", [
    (["--setups", "azure x3 ramp"], "unknown setup"),
    (["--shapes", "sawtooth"], "unknown shape"),
    (["--sources", "azure x0.5", "--rate-scale", "2"], "--rate-scale is set by each setup"),
    (["--sources", "azure x0.5", "--rate-profile", "0:1"], "--rate-profile is set by each setup"),
    (["--sources", "azure x0.5", "--hours", "0"], "--hours must be an integer >= 1"),
])
def test_bad_options_are_one_line_errors(argv, message):
    with pytest.raises(SystemExit, match=message):
        shapes.main(argv)


def test_options_of_the_benchmark_pass_on_whole_not_as_abbreviations_of_its_own():
    # `--set` once read as an abbreviation of `--setups` ("unknown setup(s) ['hpa.target=4']")
    own, rest = shapes.parser().parse_known_args(["--set", "hpa.target=4", "--sources", "azure x0.5"])
    assert own.setups is None and own.sources == "azure x0.5" and rest == ["--set", "hpa.target=4"]
    assert shapes.bench.parser().parse_args(rest).set == ["hpa.target=4"]
