"""A trace that fails mid-replay (`sim.replay_trace.TraceStop`): the run stops as at a Ctrl-C and is stored as failed
with every request replayed before the bad row, those in the system in flight, and its summary's counts."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest
from controlplane.storage import get_run, iter_rows, make_engine
from controlplane.testing import make_config
from sim.replay import replay
from sim.traces import TraceFormatError, TraceRequest

HEADER = "request_id,arrival_s,prompt_tokens,output_tokens\n"
GOOD = "".join(f"r{i},{i * 0.1:.1f},100,10\n" for i in range(50))


def _stored(url: str, run_id: int) -> tuple[dict, Counter]:
    engine = make_engine(url)
    try:
        return get_run(engine, run_id), Counter(r["status"] for r in iter_rows(engine, run_id, "requests"))
    finally:
        engine.dispose()


def test_a_bad_row_mid_replay_stores_every_request_before_it(tmp_path):
    # (the failed run kept 0 rows: its requests, replayed, were lost with the error)
    path = tmp_path / "t.csv"
    path.write_text(HEADER + GOOD + "bad,5.0,abc,10\n")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(TraceFormatError, match="t.csv:52: field 'prompt_tokens'") as info:
        replay(path, make_config(storage={"url": url}))
    error = info.value
    assert error.failed_run_id == 1 and error.num_arrived == 50 and error.summary["num_requests"] == 50
    run, statuses = _stored(url, 1)
    assert run["status"] == "failed" and sum(statuses.values()) == 50
    summary = run["summary"]
    assert summary["error"].startswith("TraceFormatError: ") and "t.csv:52" in summary["error"]
    assert summary["num_completed"] == statuses["completed"] and summary["num_in_flight"] == statuses["in_flight"]
    assert summary["num_completed"] + summary["num_in_flight"] == 50 and summary["failed_at_s"] >= 4.9


def test_a_truncated_gzip_stores_the_requests_read_before_its_end(tmp_path):
    # (it kept whatever prefix the writer had flushed)
    rows = "".join(f"s{i},{i * 0.1:.1f},100,10\n" for i in range(3000))
    raw = gzip.compress((HEADER + rows).encode())
    path = tmp_path / "t.csv.gz"
    path.write_bytes(raw[: len(raw) // 2])
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(TraceFormatError, match="not a readable gzip file") as info:
        replay(path, make_config(storage={"url": url}))
    run, statuses = _stored(url, 1)
    assert run["status"] == "failed" and 0 < info.value.num_arrived == sum(statuses.values()) < 3000
    assert run["summary"]["num_requests"] == info.value.num_arrived


def test_a_stream_failing_mid_replay_is_stored_too_and_unrecorded_runs_raise_as_before():
    def requests():
        yield TraceRequest("a", 0.0, 10, 2)
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="the source went away") as info:
        replay(requests(), make_config(), record=False)
    assert info.value.failed_run_id is None and info.value.summary["num_requests"] == 1

