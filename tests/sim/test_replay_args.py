"""What a library replay checks of its arguments before a run opens, and says when it replayed nothing
(`sim.replay_args`)."""

from __future__ import annotations

import logging

import pytest

from controlplane.storage import get_run, make_engine
from controlplane.testing import make_config, make_trace
from sim.replay import TraceTransforms, replay

NOTHING = "sim.replay.nothing_replayed"


def test_an_unknown_trace_format_of_a_stream_is_refused(tmp_path):
    # (it was stored in the run row as given: trace_format 'azur')
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(ValueError, match=r"^unknown trace format 'azur' \(did you mean 'azure'\?\); valid formats: "
                                         r"azure, mooncake, "):
        replay(make_trace(5), make_config(storage={"url": url}), trace_format="azur", trace_name="mine")
    assert not (tmp_path / "runs.db").exists()  # (refused before the run opens)
    summary, _ = replay(make_trace(5), make_config(storage={"url": url}), trace_format="azure", trace_name="mine")
    assert get_run(make_engine(url), summary["run_id"])["trace_format"] == "azure"


def test_a_generator_read_to_its_end_is_refused_the_second_time():
    requests = (r for r in make_trace(5))
    assert replay(requests, make_config(), record=False).summary["num_requests"] == 5
    with pytest.raises(ValueError, match=r"^the trace is a generator that was read to its end already \(by an "
                                         r"earlier replay\?\): a generator gives its requests once; pass a list"):
        replay(requests, make_config(), record=False)  # (it replayed nothing, silently)


@pytest.mark.parametrize("trace, transforms", [
    (make_trace(5), TraceTransforms(window_start_s=1e6)),  # a window past the end
    (make_trace(5), TraceTransforms(limit=0)),
    ([], None),  # an empty stream
])
def test_a_replay_of_no_request_logs_a_warning(caplog, trace, transforms):
    with caplog.at_level(logging.WARNING, logger=NOTHING):
        summary, _ = replay(trace, make_config(), transforms=transforms, record=False)
    assert summary["num_requests"] == 0
    assert [r.getMessage() for r in caplog.records if r.name == NOTHING] == [
        "no request was replayed (run None): the trace gave none, or its requests all fell outside the window "
        "(TraceTransforms window_start_s / window_end_s), or limit, rate_scale, rate_profile or sim.until_s left none"]


def test_a_replay_of_requests_or_told_not_to_warn_logs_none(caplog):
    with caplog.at_level(logging.WARNING, logger=NOTHING):
        replay(make_trace(5), make_config(), record=False)
        replay(make_trace(5), make_config(), transforms=TraceTransforms(limit=0), record=False, warn_if_empty=False)
    assert not [r for r in caplog.records if r.name == NOTHING]


def test_a_bad_window_is_named_by_the_transforms_fields():
    # (it said "end_s (10.0) must be greater than start_s (20.0)", keywords of sim.traces.transforms)
    with pytest.raises(ValueError, match=r"^window_end_s \(10\.0\) must be greater than window_start_s \(20\.0\)$"):
        replay(make_trace(5), make_config(), transforms=TraceTransforms(window_start_s=20, window_end_s=10),
               record=False)
    with pytest.raises(ValueError, match=r"^window_start_s must be a finite number of seconds >= 0, got -1$"):
        TraceTransforms(window_start_s=-1).apply([], 0)


def test_on_progress_is_called_each_simulated_minute_and_as_the_run_drains_as_documented():
    # (the docstring said "every 256 arrivals" only)
    from sim.traces import TraceRequest

    trace = [TraceRequest(f"r{i}", t, 64, 2000) for i, t in enumerate((0.0, 1.0, 150.0))]
    calls: list[tuple[int, float]] = []
    replay(trace, make_config(), record=False, on_progress=lambda n, t: calls.append((n, t)))
    assert (2, 60.0) in calls and (2, 120.0) in calls  # the idle gap's minutes, no arrival among them
    drained = [t for n, t in calls if n == 3]
    assert len(drained) > 1 and drained == sorted(drained)  # each tick once the trace has ended
    doc = " ".join(replay.__doc__.split())
    assert ("every 256 arrivals, at the control ticks in the first second of each simulated minute (idle gaps too), "
            "and at every tick once the trace has ended") in doc


@pytest.mark.parametrize("transforms", [{"limit": 1}, {}, (("limit", 1),), 1])
def test_transforms_that_are_not_trace_transforms_are_a_type_error_saying_what_to_pass(tmp_path, transforms):
    """`replay(reqs, cfg, transforms={'limit': 1})` failed with "'dict' object has no attribute 'apply'"
    (and `{}` replayed every request, as no transforms)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    hint = r" \(a dict of its fields: TraceTransforms\(\*\*transforms\)\)" if isinstance(transforms, dict) else ""
    with pytest.raises(TypeError, match=r"^transforms must be a sim.replay.TraceTransforms, e.g. "
                                        rf"TraceTransforms\(speed_up=2, limit=500\), or None; got "
                                        rf"{type(transforms).__name__}{hint}$"):
        replay(make_trace(5), make_config(storage={"url": url}), transforms=transforms)
    assert not (tmp_path / "runs.db").exists()  # (refused before the run opens)


def test_a_bundled_trace_is_named_as_the_command_line_names_it(tmp_path):
    """`replay('bundled:azure_code', cfg)` was "trace file not found: bundled:azure_code", though the command line
    takes the name and the README says the library call gives the same run for the same arguments."""
    from pathlib import Path

    from controlplane.storage import iter_rows
    from sim.traces import bundled_trace_path

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = make_config(storage={"url": url})
    runs = [replay(trace, config, transforms=TraceTransforms(limit=20)).run_id
            for trace in ("bundled:azure_code", Path("bundled:azure_code"), bundled_trace_path("azure_code"))]
    engine = make_engine(url)
    stored = [get_run(engine, run_id) for run_id in runs]
    assert {(r["trace"], r["trace_format"]) for r in stored} == {(str(bundled_trace_path("azure_code")), "azure")}
    assert len({tuple(map(str, iter_rows(engine, run_id, "requests"))) for run_id in runs}) == 1
    assert [r["summary"]["num_requests"] for r in stored] == [20, 20, 20]
    engine.dispose()
    with pytest.raises(ValueError, match=r"^unknown bundled trace 'azure_cod'; valid names: azure_code$"):
        replay("bundled:azure_cod", config)
