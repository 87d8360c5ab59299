"""Property-based tests of every trace reader: whatever a row holds, reading either gives sane
requests or stops with a `TraceFormatError` naming the file, the line and (for a bad field) the
field; never another exception, never a hang."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.traces import TraceFormatError, read_trace

# One valid file per format: a header (CSV) and three rows; the fuzzed row is the second.
CSV_FORMATS = {
    "azure": ("TIMESTAMP,ContextTokens,GeneratedTokens",
              ["2023-11-16 18:15:46.6805900,374,44", "2023-11-16 18:15:50.9951690,396,109",
               "2023-11-16 18:15:51.2000000,879,5"]),
    "vidur": ("num_prefill_tokens,num_decode_tokens", ["374,44", "396,109", "879,5"]),
    "canonical": ("request_id,arrival_s,prompt_tokens,output_tokens",
                  ["a,0.0,374,44", "b,1.5,396,109", "c,2.0,879,5"]),
    "burstgpt": ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
                 ["5,ChatGPT,472,18,490,Conversation log", "45,GPT-4,1087,0,1087,API log",
                  "118,ChatGPT,417,276,693,API log"]),
}
JSON_FORMATS = {
    "mooncake": [{"timestamp": 0, "input_length": 374, "output_length": 44, "hash_ids": [1, 2]},
                 {"timestamp": 10, "input_length": 396, "output_length": 109, "hash_ids": [1, 3]},
                 {"timestamp": 20, "input_length": 879, "output_length": 5, "hash_ids": [4]}],
    "canonical": [{"request_id": "a", "arrival_s": 0.0, "prompt_tokens": 374, "output_tokens": 44},
                  {"request_id": "b", "arrival_s": 1.5, "prompt_tokens": 396, "output_tokens": 109},
                  {"request_id": "c", "arrival_s": 2.0, "prompt_tokens": 879, "output_tokens": 5}],
    "bailian": [{"chat_id": 1, "parent_chat_id": -1, "timestamp": 0.5, "input_length": 374, "output_length": 44,
                 "type": "text", "turn": 1, "hash_ids": [1, 2]},
                {"chat_id": 2, "parent_chat_id": 1, "timestamp": 1.5, "input_length": 396, "output_length": 109,
                 "type": "image", "turn": 2, "hash_ids": [1, 3]},
                {"chat_id": 3, "parent_chat_id": -1, "timestamp": 2.5, "input_length": 879, "output_length": 5,
                 "type": "text", "turn": 1, "hash_ids": [4]}],
}

# Field values a careless or hostile file holds.
hostile_text = st.one_of(
    st.sampled_from(["", " ", "-1", "0", "1e309", "nan", "inf", "-inf", "1.5", "9" * 40, "\x00", "\ufeff7",
                     "0x10", "1,2", '"', "null", "true", "[]", "{}", "2023-13-45 99:99:99"]),
    st.text(max_size=30),
)
hostile_json = st.one_of(
    hostile_text, st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                         st.integers(), max_size=2),
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_all(path: Path, fmt: str) -> list:
    return list(read_trace(path, fmt, rng=np.random.default_rng(0)))


def _check_sane(requests: list) -> None:
    for r in requests:
        assert math.isfinite(r.arrival_s)
        assert isinstance(r.prompt_tokens, int) and r.prompt_tokens >= 0
        assert isinstance(r.output_tokens, int) and r.output_tokens >= 0


def _check_error(exc: TraceFormatError, path: Path, line: int, field: str) -> None:
    """The error names the file, and the fuzzed line and field, or the next line (a value that
    breaks the order of arrivals is found there)."""
    assert exc.path == str(path) and str(path) in str(exc)
    assert exc.line in (line, line + 1), (exc, line)
    if exc.line == line and exc.field is not None:
        assert exc.field.lower() == field.lower(), (exc, field)
        assert repr(exc.field) in str(exc)


@FUZZ
@given(fmt=st.sampled_from(sorted(CSV_FORMATS)), column=st.integers(0, 5), value=hostile_text)
def test_a_hostile_csv_field_is_read_or_named(tmp_path_factory, fmt, column, value):
    header, rows = CSV_FORMATS[fmt]
    names = header.split(",")
    column %= len(names)
    fields = rows[1].split(",")
    fields[column] = value
    path = tmp_path_factory.mktemp("csv") / f"trace-{fmt}.csv"
    # csv quoting keeps the row one physical line unless the value holds a line break
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerow(rows[0].split(","))
    writer.writerow(fields)
    writer.writerow(rows[2].split(","))
    path.write_text(buf.getvalue())
    try:
        requests = _read_all(path, fmt)
    except TraceFormatError as exc:
        if "\n" in value or "\r" in value:  # a line break inside a field: rows are re-cut
            assert exc.path == str(path) and exc.line is not None
        else:
            _check_error(exc, path, 3, names[column])
        return
    _check_sane(requests)


@FUZZ
@given(fmt=st.sampled_from(sorted(JSON_FORMATS)), key_index=st.integers(0, 7), value=hostile_json,
       drop=st.booleans())
def test_a_hostile_jsonl_value_is_read_or_named(tmp_path_factory, fmt, key_index, value, drop):
    rows = [dict(r) for r in JSON_FORMATS[fmt]]
    keys = sorted(rows[1])
    key = keys[key_index % len(keys)]
    if drop:
        del rows[1][key]
    else:
        rows[1][key] = value
    path = tmp_path_factory.mktemp("jsonl") / f"trace-{fmt}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    try:
        requests = _read_all(path, fmt)
    except TraceFormatError as exc:
        _check_error(exc, path, 2, key)
        return
    assert len(requests) == len(rows)  # read whole: no row silently dropped
    _check_sane(requests)


@FUZZ
@given(fmt=st.sampled_from(["azure", "vidur", "canonical", "mooncake", "burstgpt", "bailian"]),
       data=st.binary(max_size=200))
def test_arbitrary_bytes_give_a_trace_error_or_requests(tmp_path_factory, fmt, data):
    path = tmp_path_factory.mktemp("bytes") / ("trace.jsonl" if fmt in ("mooncake", "bailian") else "trace.csv")
    path.write_bytes(data)
    try:
        requests = _read_all(path, fmt)
    except TraceFormatError as exc:
        assert exc.path == str(path)
        return
    _check_sane(requests)
