"""A trace that fails mid-replay (`sim.replay_trace.TraceStop`): the run stops as at a Ctrl-C and is stored as failed
with every request replayed before the bad row, those in the system in flight, and its summary's counts."""

from __future__ import annotations

import gzip
import os
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


def _vidur_config(**deployment):
    # (the bundled replay's deployment: Llama-3-8B under the default vidur latency model, 8,192-token context)
    return make_config(cluster={"models": [{"name": "default", "replicas": 1, "latency_model": "vidur", "latency": {
        "model": "meta-llama/Meta-Llama-3-8B", "gpu": "a100", "tensor_parallel": 1, "attention": "scaled"},
        "gpu": "a100-80gb", "gpus_per_replica": 1, **deployment}]})


def test_requests_past_the_models_context_are_counted_and_warned_of_once(caplog):
    # (a 100,000-token prompt on Llama-3-8B was served silently by vidur; only splitwise warned)
    trace = [TraceRequest("a", 0.0, 100_000, 10), TraceRequest("b", 1.0, 100, 10), TraceRequest("c", 2.0, 8190, 10),
             TraceRequest("d", 3.0, 8182, 10)]  # (c: 8,200 tokens with its output; d: 8,192, the window exactly)
    with caplog.at_level("WARNING", logger="sim.replay"):
        summary, _ = replay(trace, _vidur_config(), record=False)
    assert summary["num_completed"] == 4 and summary["requests_past_context"] == {"default": 2}
    [warning] = [r.getMessage() for r in caplog.records if "context window" in r.getMessage()]
    assert warning.startswith("2 requests were longer (prompt + output tokens) than the 8,192-token context window "
                              "of the model of deployment 'default': latency model 'vidur' prices them all the same")
    assert "set that deployment's max_model_len: 8192" in warning


def test_a_deployment_with_max_model_len_refuses_them_as_too_long_and_nothing_is_counted(caplog):
    trace = [TraceRequest("a", 0.0, 100_000, 10), TraceRequest("b", 1.0, 100, 10)]
    with caplog.at_level("WARNING", logger="sim.replay"):
        summary, _ = replay(trace, _vidur_config(max_model_len=8192), record=False)
    assert summary["num_completed"] == 1 and summary["num_rejected"] == 1 and "requests_past_context" not in summary
    assert not [r for r in caplog.records if "context window" in r.getMessage()]


def test_a_pipe_or_a_device_is_said_to_be_no_regular_file_not_missing(tmp_path):
    # (a process substitution <(cat t.csv) and /dev/null were "trace file not found")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a pipe"), ("/dev/null", "a device")):
        with pytest.raises(ValueError, match=f"trace {path} is not a regular file but {kind}.*save it to a file first"):
            replay(path, make_config(), record=False)
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        replay(tmp_path / "none.csv", make_config(), record=False)
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        replay(tmp_path, make_config(), record=False)
