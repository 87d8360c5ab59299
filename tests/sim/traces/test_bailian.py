"""The Qwen-Bailian reader (sim/traces/bailian.py), and Mooncake's reader on Bailian's layout, on
small files written here in the layout the dataset's description gives (no Bailian file is
available to the project: /work/shared/data/README.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.traces import TraceFormatError, TraceRequest, detect_format, read_trace


def _row(chat_id, ts, n_in=40, n_out=5, kind="text", parent=-1, turn=1, hashes=(7, 8, 9)):
    return json.dumps({"chat_id": chat_id, "parent_chat_id": parent, "timestamp": ts, "input_length": n_in,
                       "output_length": n_out, "type": kind, "turn": turn, "hash_ids": list(hashes)}) + "\n"


ROWS = _row(159, 61.25) + _row(160, 62.5, 70, 10, "image", 159, 2, (7, 8, 9, 10, 11)) + _row(161, 62.5, kind="search")


def test_rows_become_requests_in_seconds_with_16_token_blocks(write):
    p = write("qwen_traceA_blksz_16.jsonl", ROWS)
    reader = read_trace(p)
    assert reader.format == "bailian"
    reqs = list(reader)
    assert reqs[0] == TraceRequest("159", 0.0, 40, 5, hash_ids=(7, 8, 9), hash_block_tokens=16)
    assert [(r.request_id, r.arrival_s) for r in reqs] == [("159", 0.0), ("160", 1.25), ("161", 1.25)]
    assert [r.tenant for r in reqs] == [None, None, None]


def test_options_block_tokens_type_as_tenant_and_spread(write):
    p = write("b.jsonl", ROWS)
    reqs = list(read_trace(p, block_tokens=32, type_as_tenant=True))
    assert [(r.tenant, r.hash_block_tokens) for r in reqs] == [("text", 32), ("image", 32), ("search", 32)]
    spread = [r.arrival_s for r in read_trace(p, spread="uniform", rng=np.random.default_rng(0))]
    assert spread[0] == 0.0 and spread == sorted(spread) and spread[1] != spread[2]  # the 62.5 s pair spread out
    with pytest.raises(ValueError, match="rng"):
        read_trace(p, spread="uniform")
    with pytest.raises(ValueError, match="type_as_tenant must be true or false"):
        read_trace(p, type_as_tenant="type")
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'timestamp_unit' for trace format 'bailian'"):
        read_trace(p, timestamp_unit="ms")


@pytest.mark.parametrize("text, field, reason", [
    ('{"parent_chat_id": -1, "timestamp": 70, "input_length": 1, "output_length": 1, "turn": 1}',
     "chat_id", "missing required key"),
    ('{"chat_id": [1], "timestamp": 70, "input_length": 1, "output_length": 1}', "chat_id",
     "expected an integer or a non-empty string id, got [1]"),
    ('{"chat_id": 3, "timestamp": "70", "input_length": 1, "output_length": 1}', "timestamp",
     "expected a number of seconds, got '70'"),
    ('{"chat_id": 3, "timestamp": 60, "input_length": 1, "output_length": 1}', "timestamp",
     "arrival goes backwards: 60 s is before the previous row's 61.25 s"),
    ('{"chat_id": 3, "timestamp": 70, "input_length": 1.5, "output_length": 1}', "input_length",
     "expected a non-negative integer"),
    ('{"chat_id": 3, "timestamp": 70, "input_length": 1, "output_length": 1, "hash_ids": [1.5]}', "hash_ids",
     "expected a list of integers"),
])
def test_a_bad_row_names_file_line_and_field(write, text, field, reason):
    p = write("b.jsonl", _row(159, 61.25) + text + "\n")
    with pytest.raises(TraceFormatError) as exc:
        list(read_trace(p, "bailian"))
    assert (exc.value.line, exc.value.field) == (2, field)
    assert str(exc.value).startswith(f"{p}:2: field {field!r}: ") and reason in str(exc.value)


def test_type_is_checked_only_when_it_becomes_the_tenant(write):
    p = write("b.jsonl", _row(1, 0.0, kind=3))
    assert list(read_trace(p))[0].tenant is None
    with pytest.raises(TraceFormatError, match=r"b\.jsonl:1: field 'type': expected a string, got 3"):
        list(read_trace(p, type_as_tenant=True))


def test_type_as_tenant_on_a_file_without_type_names_the_missing_key(write):
    """Asked to make `type` the tenant, a row without it is an error, not a request left untenanted
    (a release without the key would otherwise lose every tenant silently); null still means none."""
    p = write("b.jsonl", json.dumps({"chat_id": 3, "timestamp": 1.0, "input_length": 5, "output_length": 3}) + "\n")
    assert list(read_trace(p))[0].tenant is None  # not asked: not read
    with pytest.raises(TraceFormatError, match=r"b\.jsonl:1: field 'type': missing required key"):
        list(read_trace(p, type_as_tenant=True))
    p = write("n.jsonl", _row(1, 0.0, kind=None))
    assert list(read_trace(p, type_as_tenant=True))[0].tenant is None


@pytest.mark.parametrize("first, expected", [
    ({"chat_id": 1, "turn": 1}, "bailian"),  # the reader then names the missing keys
    ({"chat_id": 1, "parent_chat_id": -1, "timestamp": 0}, "bailian"),
    ({"chat_id": 1, "timestamp": 0, "input_length": 1, "output_length": 1}, "bailian"),
    ({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [0], "turn": 1}, "mooncake"),
])
def test_detection(write, first, expected):
    assert detect_format(write("t.jsonl", json.dumps(first) + "\n")) == expected


def test_a_chat_id_given_twice_is_the_row_error_naming_file_line_and_key(write):
    p = write("b.jsonl", _row(1, 0.0) + _row(2, 0.005) + _row(1, 0.01))
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, unique_ids=True))
    assert str(e.value) == (f"{p}:3: field 'chat_id': duplicate request id '1': an earlier row has it "
                            "(request ids must be unique in a trace)")
    reader = read_trace(p, on_error="skip", spread="none", unique_ids=True)
    assert [r.request_id for r in reader] == ["1", "2"] and reader.skipped == 1


@pytest.mark.parametrize("chat_id, kind, field", [('"\\ud800"', '"text"', "chat_id"), ('"c\\u0000"', '"text"', "chat_id"),
                                                  ("7", '"te\\u0000xt"', "type")])
def test_text_no_database_stores_is_a_bad_row(write, chat_id, kind, field):
    line = ('{"chat_id": %s, "parent_chat_id": -1, "timestamp": 1, "input_length": 4, "output_length": 2, '
            '"type": %s, "turn": 1, "hash_ids": []}\n') % (chat_id, kind)
    p = write("b.jsonl", _row(1, 0.5) + line)
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, "bailian", type_as_tenant=True))
    assert (e.value.line, e.value.field) == (2, field) and ("NUL" in e.value.reason or "surrogate" in e.value.reason)


def test_a_skipped_first_row_whose_timestamp_reads_is_the_time_origin(write):
    p = write("b.jsonl", _row(158, 60.0, n_in="x") + ROWS)
    reader = read_trace(p, on_error="skip")
    assert [(r.request_id, r.arrival_s) for r in reader] == [("159", 1.25), ("160", 2.5), ("161", 2.5)]
    assert reader.skipped == 1
