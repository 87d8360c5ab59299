"""A replay reads its trace's header and first request before its run opens (`sim.replay.first_read`): an
error of the trace as a whole stores no failed run; a row found bad once the replay started does."""

from __future__ import annotations

import pytest

from controlplane.storage import list_runs, make_engine
from controlplane.testing import make_config
from sim.replay import first_read, replay
from sim.traces import TraceFormatError, TraceRequest

MOONCAKE_LINE = '{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [0]}\n'


@pytest.mark.parametrize("name, text, fmt, error", [
    # (each stored a failed run: the run opened before the lazy reader read the header)
    ("bad.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,10\n", None,
     "field 'GeneratedTokens': missing required column"),
    ("bad.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,10\n", "vidur",
     "field 'num_prefill_tokens': missing required column"),
    ("m.jsonl", MOONCAKE_LINE, "azure", "a JSON Lines file"),
    ("epoch.jsonl", '{"request_id": "a", "arrival_s": 1700000000.0, "prompt_tokens": 100, "output_tokens": 10}\n',
     None, "19,676 days after time 0"),
    ("c.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,x,5\nb,1,10,5\n", None,
     "field 'prompt_tokens'"),  # (a bad first row: found before any request is replayed)
    ("h.csv", "request_id,arrival_s,prompt_tokens,output_tokens\n", None, "no data rows"),
])
def test_a_trace_error_found_before_the_first_request_stores_no_run(tmp_path, name, text, fmt, error):
    path = tmp_path / name
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(TraceFormatError, match=error):
        replay(path, make_config(storage={"url": url}), trace_format=fmt)
    assert not (tmp_path / "runs.db").exists() or list_runs(make_engine(url)) == []


def test_a_row_found_bad_mid_replay_still_stores_a_failed_run(tmp_path):
    path = tmp_path / "mid.csv"
    path.write_text("request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,5\nb,1,x,5\n")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(TraceFormatError, match="mid.csv:3: field 'prompt_tokens'"):
        replay(path, make_config(storage={"url": url}))
    assert [(r["id"], r["status"]) for r in list_runs(make_engine(url))] == [(1, "failed")]


def test_first_read_gives_the_first_request_back_first():
    reqs = [TraceRequest(str(i), float(i), 1, 1) for i in range(3)]
    source = iter(reqs)
    stream = first_read(source)
    assert next(source) == reqs[1]  # (the first was read already)
    assert list(stream) == [reqs[0], reqs[2]]
    assert list(first_read(iter(()))) == []
