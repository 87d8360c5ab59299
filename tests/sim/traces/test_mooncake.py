import json
import logging
import math

import numpy as np
import pytest

from sim.traces import TraceFormatError, detect_format, read_trace
from sim.traces.mooncake import read_mooncake

from .conftest import MOONCAKE, need


def _line(ts, n_in=600, n_out=5, hashes=None):
    return json.dumps({"timestamp": ts, "input_length": n_in, "output_length": n_out,
                       "hash_ids": hashes if hashes is not None else list(range(math.ceil(n_in / 512)))}) + "\n"


def test_real_trace_spread_none():
    path = need(MOONCAKE)
    assert detect_format(path) == "mooncake"
    with open(path) as f:
        raw = [json.loads(line) for line in f]
    reqs = list(read_trace(path, spread="none"))
    assert len(reqs) == len(raw) == 12031
    assert [r.arrival_s for r in reqs] == [(o["timestamp"] - raw[0]["timestamp"]) / 1000 for o in raw]
    assert all(r.hash_ids == tuple(o["hash_ids"]) for r, o in zip(reqs, raw))
    assert all(len(r.hash_ids) == math.ceil(r.prompt_tokens / 512) for r in reqs)
    assert all(r.hash_block_tokens == 512 for r in reqs)
    assert [r.request_id for r in reqs[:3]] == ["0", "1", "2"]


def test_real_trace_spread_uniform_is_deterministic_ordered_and_inside_buckets():
    path = need(MOONCAKE)
    none = list(read_trace(path, spread="none"))
    a = list(read_trace(path, rng=np.random.default_rng(7)))  # uniform is the default
    b = list(read_trace(path, rng=np.random.default_rng(7)))
    c = list(read_trace(path, rng=np.random.default_rng(8)))
    assert a == b
    assert [r.arrival_s for r in a] != [r.arrival_s for r in c]
    assert a[0].arrival_s == 0.0
    arr = np.array([r.arrival_s for r in a])
    assert np.all(np.diff(arr) >= 0)
    assert np.mean(np.diff(arr) == 0) < 0.01  # raw: ~90% zero gaps
    # every request stays inside [its bucket, next distinct timestamp), up to the global shift
    raw = np.array([r.arrival_s for r in none])
    distinct = np.unique(raw)
    nxt = dict(zip(distinct[:-1], distinct[1:]))
    first_gap = distinct[1] - distinct[0]
    last_gap = (distinct[-1] - distinct[0]) / (len(distinct) - 1)
    for r, t in zip(arr, raw):
        assert t - first_gap <= r < nxt.get(t, t + last_gap) + 1e-9
    assert [x.request_id for x in a] == [x.request_id for x in none]  # file order kept
    assert all(x.hash_ids == y.hash_ids for x, y in zip(a, none))


def test_spread_needs_rng_and_valid_option(write):
    p = write("m.jsonl", _line(0) + _line(3000))
    with pytest.raises(ValueError, match="rng"):
        read_trace(p)
    with pytest.raises(ValueError, match="unknown spread 'gaussian'.*none, uniform"):
        read_trace(p, rng=np.random.default_rng(0), spread="gaussian")


def test_small_spread_fixture(write):
    p = write("m.jsonl", _line(1000) + _line(1000) + _line(1000) + "\n" + _line(4000) + _line(10000))
    reqs = list(read_mooncake(p, rng=np.random.default_rng(0)))
    t = [r.arrival_s for r in reqs]
    assert t[0] == 0.0 and t == sorted(t)
    # raw buckets at 0, 3 and 9 s (gaps 3 and 6 s, the last bucket gets the mean gap 4.5 s);
    # the whole trace is shifted back by less than the first gap so it starts at 0.0
    assert all(x < 3.0 for x in t[:3])
    assert 0.0 < t[3] < 9.0 and 6.0 < t[4] < 13.5
    # spread none keeps the raw times
    assert [r.arrival_s for r in read_mooncake(p, spread="none")] == [0.0, 0.0, 0.0, 3.0, 9.0]


@pytest.mark.parametrize("text, line, field, needle", [
    ('{"timestamp": 0, "input_length": 1, "output_length": 1\n', 2, None,
     "invalid JSON: Expecting ',' delimiter (column 55)"),  # (the column on its line: where the '}' is missing)
    ('{"timestamp": 0, "input_length": 1}\n', 2, "output_length", "missing required key"),
    ('{"timestamp": "x", "input_length": 1, "output_length": 1}\n', 2, "timestamp", "milliseconds"),
    ('{"timestamp": 0, "input_length": -1, "output_length": 1}\n', 2, "input_length", "non-negative integer"),
    ('{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1, "a"]}\n', 2, "hash_ids", "list of integers"),
    ('[1, 2]\n', 2, None, "expected a JSON object"),
])
def test_bad_lines(write, text, line, field, needle):
    p = write("trace.jsonl", _line(5) + text)
    with pytest.raises(TraceFormatError) as exc:
        list(read_mooncake(p, spread="none"))
    assert (exc.value.line, exc.value.field) == (line, field)
    assert str(exc.value).startswith(f"{p}:{line}: ")
    assert needle in str(exc.value)


def test_backwards_timestamp_and_empty(write):
    p = write("trace.jsonl", _line(5000) + "\n" + _line(4000))
    with pytest.raises(TraceFormatError, match=r"trace\.jsonl:3: field 'timestamp': arrival goes backwards"):
        list(read_mooncake(p, spread="none"))
    with pytest.raises(TraceFormatError, match="empty file: expected one JSON object per line"):
        list(read_mooncake(write("e.jsonl", "\n\n"), spread="none"))


def test_skip_bad_lines(write):
    p = write("trace.jsonl", _line(0) + "{oops\n" + _line(1000))
    reader = read_trace(p, spread="none", on_error="skip")
    assert [r.request_id for r in reader] == ["0", "2"]
    assert [e.line for e in reader.errors] == [2]


# Alibaba's Qwen-Bailian rows (sim/traces/bailian.py): Mooncake's keys, seconds, a chat_id
BAILIAN_ROWS = "".join(json.dumps({"chat_id": c, "parent_chat_id": -1, "timestamp": ts, "input_length": 40,
                                   "output_length": 5, "type": "text", "turn": 1, "hash_ids": [7, 8, 9]}) + "\n"
                       for c, ts in ((159, 61.25), (160, 62.5), (161, 62.5)))


def test_timestamp_unit_must_be_ms_or_s(write):
    with pytest.raises(ValueError, match="unknown timestamp_unit 'us' for format 'mooncake'; valid choices: ms, s"):
        read_trace(write("m.jsonl", _line(0)), timestamp_unit="us", spread="none")


def test_timestamp_unit_s_in_errors(write):
    p = write("m.jsonl", _line(5) + _line(4))
    with pytest.raises(TraceFormatError, match=r"m\.jsonl:2: field 'timestamp': arrival goes backwards: 4 s is "
                                               r"before the previous row's 5 s"):
        list(read_trace(p, timestamp_unit="s", spread="none"))


def test_read_as_mooncake_it_warns_once_and_timestamp_unit_s_keeps_seconds(write, caplog):
    p = write("b.jsonl", BAILIAN_ROWS)
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        ms = [r.arrival_s for r in read_trace(p, "mooncake", spread="none")]
    assert ms == [0.0, 0.00125, 0.00125]  # seconds taken as milliseconds: 1000x compressed
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: its rows have Bailian's key 'chat_id': if it is a Qwen-Bailian trace (timestamps in seconds, "
        "16-token hash blocks), read it with --format bailian; read as mooncake, its timestamps are taken as "
        "milliseconds"]
    reqs = list(read_trace(p, "mooncake", spread="none", timestamp_unit="s"))
    assert [r.arrival_s for r in reqs] == [0.0, 1.25, 1.25]
    assert [r.request_id for r in reqs] == ["0", "1", "2"] and reqs[0].hash_block_tokens == 512


def test_a_mooncake_file_gives_no_warning(write, caplog):
    p = write("m.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n')
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        assert len(list(read_trace(p, spread="none"))) == 1
    assert caplog.records == []


@pytest.mark.parametrize("spread", ["none", "uniform"])
def test_a_skipped_first_row_whose_timestamp_reads_is_the_time_origin(write, spread):
    # (a bad input_length in the first row moved time 0 to the next row: a window was cut elsewhere)
    p = write("first.jsonl", '{"timestamp": 3000, "input_length": "x", "output_length": 1}\n'
              + _line(5000) + _line(5000) + _line(8000))
    reader = read_trace(p, spread=spread, on_error="skip", rng=np.random.default_rng(0))
    reqs = list(reader)
    assert reader.skipped == 1 and [r.request_id for r in reqs] == ["1", "2", "3"]
    assert 2.0 <= reqs[0].arrival_s <= reqs[1].arrival_s < 5.0 <= reqs[2].arrival_s
    if spread == "none":
        assert [r.arrival_s for r in reqs] == [2.0, 2.0, 5.0]
    # a row whose timestamp does not read sets nothing; a row before the origin goes backwards
    p = write("bad_ts.jsonl", '{"timestamp": "x", "input_length": 1, "output_length": 1}\n'
              '{"timestamp": 3000, "input_length": 1}\n' + _line(2000) + _line(4000))
    reader = read_trace(p, spread="none", on_error="skip")
    assert [(r.request_id, r.arrival_s) for r in reader] == [("3", 1.0)]
    assert [(e.line, e.field) for e in reader.errors] == [(1, "timestamp"), (2, "output_length"), (3, "timestamp")]
