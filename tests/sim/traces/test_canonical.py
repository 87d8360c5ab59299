import csv
import json
import math

import pytest

from sim.traces import TraceFormatError, TraceRequest, detect_format, read_trace, write_canonical
from sim.traces.canonical import read_canonical_csv, read_canonical_jsonl
from sim.traces.record import params_from_mapping

from .conftest import ANCHORS

HEADER = "request_id,arrival_s,prompt_tokens,output_tokens\n"


@pytest.mark.skipif(not ANCHORS, reason="Vidur anchors not available")
@pytest.mark.parametrize("path", ANCHORS, ids=lambda p: p.parent.name)
def test_vidur_anchor_workloads_read_unchanged(path):
    assert detect_format(path) == "canonical"
    reqs = list(read_trace(path))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(reqs) == len(rows) == 10000
    for r, row in zip(reqs, rows):
        assert (r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) == (
            row["request_id"], float(row["arrival_s"]), int(row["prompt_tokens"]), int(row["output_tokens"]))
    assert reqs[0].arrival_s == 0.0


def test_optional_columns(write):
    p = write("c.csv", "request_id,arrival_s,prompt_tokens,output_tokens,model,tenant,priority,prompt,hash_ids,params\n"
              'a,0.5,10,2,llama,t1,-1,"hello, ""world""\nsecond line",1 2 3,"{""temperature"": 0.2, ""stop"": [""\\n""]}"\n'
              "b,1.0,3,4,,,,,,\n")
    a, b = read_trace(p)
    assert a == TraceRequest("a", 0.5, 10, 2, model="llama", tenant="t1", priority=-1,
                             prompt='hello, "world"\nsecond line', hash_ids=(1, 2, 3),
                             params=params_from_mapping({"temperature": 0.2, "stop": ["\n"]}))
    assert b == TraceRequest("b", 1.0, 3, 4)


def test_arrival_kept_as_written_and_empty_id_falls_back_to_row_index(write):
    p = write("c.csv", HEADER + "x,5.0,1,1\n,6.0,1,1\n")
    assert [(r.request_id, r.arrival_s) for r in read_trace(p)] == [("x", 5.0), ("1", 6.0)]


@pytest.mark.parametrize(("name", "text", "line"), [
    ("c.csv", HEADER + "a,0.0,10,5\na,0.1,10,5\n", 3),  # four plain columns (the fast path)
    ("c.csv", "request_id,arrival_s,prompt_tokens,output_tokens,model\na,0,1,1,m\n\nb,1,1,1,m\na,2,1,1,m\n", 5),
    ("c.csv", HEADER + "x,0,1,1\n2,1,1,1\n,2,1,1\n", 4),  # an empty id falls back to its row index, 2: taken
    ("c.jsonl", '{"request_id": "a", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n'
                '{"request_id": "a", "arrival_s": 0.01, "prompt_tokens": 1, "output_tokens": 1}\n', 2),
])
def test_a_duplicate_request_id_is_the_row_error_naming_file_line_and_field(write, name, text, line):
    p = write(name, text)
    rows = sum(1 for r in text.splitlines() if r.strip()) - (not name.endswith(".jsonl"))
    assert len(list(read_trace(p))) == rows  # unchecked by default: the reader holds one row
    with pytest.raises(TraceFormatError, match="duplicate request id") as e:
        list(read_trace(p, unique_ids=True))
    assert (e.value.path, e.value.line, e.value.field) == (str(p), line, "request_id")
    reader = read_trace(p, on_error="skip", unique_ids=True)  # skipped and counted, as any bad row
    assert len(list(reader)) == rows - 1 and reader.skipped == 1


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".csv.gz", ".csv.bz2", ".jsonl.xz", ".ndjson.bz2", ".csv.XZ"])
def test_round_trip(tmp_path, suffix):
    reqs = [
        TraceRequest("a", 0.0, 10, 2, model="m", tenant="t", priority=2, prompt="p, \"q\"\nr",
                     hash_ids=(4, 5), hash_block_tokens=16, params=params_from_mapping({"temperature": 0.5, "stop": ["x"]})),
        TraceRequest("b", 0.1 + 0.2, 3, 4, model="m", tenant="t", priority=0, prompt="s",
                     hash_ids=(6,), hash_block_tokens=16),
    ]
    p = tmp_path / f"out{suffix}"
    assert write_canonical(reqs, p) == 2
    assert detect_format(p) == "canonical"
    assert list(read_trace(p)) == reqs


@pytest.mark.parametrize("name, magic, jsonl", [("x.csv.gz", b"\x1f\x8b", False), ("x.csv.bz2", b"BZh", False),
                                                ("y.jsonl.xz", b"\xfd7zXZ\x00", True), ("y.jsonl.bz2", b"BZh", True)])
def test_a_compressed_name_is_written_compressed_in_the_format_before_its_compression(tmp_path, name, magic, jsonl):
    # (.bz2 and .xz were written as plain text, which the readers, decompressing by extension, refused)
    reqs = [TraceRequest("a", 0.0, 10, 2), TraceRequest("b", 0.5, 3, 4)]
    p = tmp_path / name
    write_canonical(reqs, p)
    assert p.read_bytes().startswith(magic)
    from sim.traces._io import open_text

    with open_text(p) as f:
        first = f.readline()
    assert first.startswith("{") if jsonl else first == HEADER
    assert list(read_trace(p)) == reqs


@pytest.mark.parametrize("name", ["x.jsonl.zst", "x.csv.zip", "x.csv.lz4", "x.zstd"])
def test_a_compression_no_reader_reads_is_refused_before_any_file_is_made(tmp_path, name):
    # ('x.jsonl.zst' was written as plain CSV: the format taken from .zst, no compression)
    with pytest.raises(ValueError, match=r"does not write \.(zst|zip|lz4|zstd) files .*\.gz, \.bz2 or \.xz"):
        write_canonical([TraceRequest("a", 0.0, 10, 2)], tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_csv_writer_keeps_four_columns_for_length_only_traces(tmp_path):
    p = tmp_path / "w.csv"
    write_canonical([TraceRequest("0", 0.0, 1, 2)], p)
    assert p.read_text().splitlines()[0] == HEADER.strip()
    with pytest.raises(ValueError, match="pass columns="):
        write_canonical([TraceRequest("0", 0.0, 1, 2), TraceRequest("1", 1.0, 1, 2, model="m")], tmp_path / "x.csv")
    write_canonical([TraceRequest("0", 0.0, 1, 2), TraceRequest("1", 1.0, 1, 2, model="m")], tmp_path / "y.csv",
                    columns=["model"])
    assert [r.model for r in read_trace(tmp_path / "y.csv")] == [None, "m"]


@pytest.mark.parametrize("name", ["z.csv", "z.csv.gz", "z.jsonl"])
def test_a_write_that_raises_leaves_no_partial_file_and_an_earlier_one_as_it_was(tmp_path, name):
    p = tmp_path / name
    bad = [TraceRequest("0", 0.0, 1, 2), TraceRequest("1", 1.0, 1, 2, model="m", priority=1, params=(("x", {1}),))]
    with pytest.raises((ValueError, TypeError)):  # no CSV column for model; JSON cannot hold a set
        write_canonical(bad, p)
    assert list(tmp_path.iterdir()) == []
    write_canonical(bad[:1], p)
    with pytest.raises((ValueError, TypeError)):
        write_canonical(bad, p)
    assert list(tmp_path.iterdir()) == [p] and list(read_trace(p)) == bad[:1]


@pytest.mark.parametrize("value", ["0", "-5", "x", "9" * 12])
@pytest.mark.parametrize("jsonl", [False, True])
def test_hash_block_tokens_not_positive_is_the_row_error_saying_positive(write, jsonl, value):
    # (prefix caching would take 0 as unset and hash 512-token blocks instead; -5 was refused as "expected a
    # non-negative integer", though 0 is refused too)
    if jsonl:
        cell = value if value != "x" else '"x"'
        p = write("h.jsonl", '{"request_id": "a", "arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5, '
                  f'"hash_block_tokens": {cell}}}\n')
        shown = repr(json.loads(cell))
    else:
        p = write("h.csv", HEADER.strip() + f",hash_block_tokens\na,0,10,5,{value}\n")
        shown = repr(value)
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p))
    assert (e.value.line, e.value.field) == (1 if jsonl else 2, "hash_block_tokens")
    assert (f"expected a positive integer (tokens per prefix-hash block, at most 2,147,483,647), got {shown}; "
            "leave the field empty") in str(e.value)


def test_jsonl(write):
    lines = [
        {"request_id": 7, "arrival_s": 0.25, "prompt_tokens": 5, "output_tokens": 1, "params": {"top_p": 0.9}},
        {"arrival_s": 0.5, "prompt_tokens": 5, "output_tokens": 1, "hash_ids": [1, 2], "unknown_key": True},
    ]
    p = write("c.jsonl", "\n".join(json.dumps(o) for o in lines) + "\n")
    a, b = read_trace(p)
    assert a == TraceRequest("7", 0.25, 5, 1, params=(("top_p", 0.9),))
    assert b == TraceRequest("1", 0.5, 5, 1, hash_ids=(1, 2))


@pytest.mark.parametrize("row, line, field, needle", [
    ("b,abc,1,1", 3, "arrival_s", "expected a finite non-negative number of seconds, got 'abc'"),
    ("b,nan,1,1", 3, "arrival_s", "got 'nan'"),
    ("b,-1,1,1", 3, "arrival_s", "got '-1'"),
    ("b,2.0,x,1", 3, "prompt_tokens", "non-negative integer"),
    ("b,2.0,1,-4", 3, "output_tokens", "non-negative integer"),
    ("b,2.0,9223372036854775808,1", 3, "prompt_tokens", "expected at most 2,147,483,647"),
    ("b,0.5,1,1", 3, "arrival_s", "arrival goes backwards"),
    ("b,2.0", 3, "prompt_tokens", "row has 2 fields"),
    ("b,2.0,1,1,7", 3, "output_tokens", "row has 5 fields, the header 4 (a field holding a comma must be quoted)"),
])
def test_csv_errors(write, row, line, field, needle):
    p = write("trace.csv", HEADER + "a,1.0,1,1\n" + row + "\n")
    with pytest.raises(TraceFormatError) as exc:
        list(read_canonical_csv(p))
    assert (exc.value.line, exc.value.field) == (line, field)
    assert str(exc.value).startswith(f"{p}:{line}: field '{field}': ")
    assert needle in str(exc.value)


def test_an_unquoted_comma_in_a_prompt_is_an_error_not_a_cut_prompt(write):
    p = write("trace.csv", HEADER.strip() + ",prompt\na,1.0,1,1,\"hello, world\"\nb,2.0,1,1,hello, world\n")
    with pytest.raises(TraceFormatError) as exc:
        list(read_canonical_csv(p))
    assert (exc.value.line, exc.value.field) == (3, "prompt") and "row has 6 fields, the header 5" in str(exc.value)


def test_trailing_empty_fields_are_not_an_error(write):
    p = write("trace.csv", HEADER + "a,1.0,1,1,\nb,2.0,1,1,,\n")
    assert [r.request_id for r in read_canonical_csv(p)] == ["a", "b"]


def test_csv_error_line_counts_quoted_newlines(write):
    p = write("trace.csv", HEADER.strip() + ",prompt\n" + 'a,1.0,1,1,"two\nlines"\nb,2.0,1,1,"x\ny"\nc,3.0,z,1,ok\n')
    with pytest.raises(TraceFormatError) as exc:
        list(read_canonical_csv(p))
    assert (exc.value.line, exc.value.field) == (6, "prompt_tokens")


def test_csv_header_errors(write):
    with pytest.raises(TraceFormatError, match=r"c\.csv:1: field 'request_id': missing required column"):
        list(read_canonical_csv(write("c.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n")))
    with pytest.raises(TraceFormatError, match="bad hash_ids|space-separated integers"):
        list(read_canonical_csv(write("h.csv", HEADER.strip() + ",hash_ids\na,0,1,1,1 x\n")))


def test_jsonl_errors(write):
    ok = json.dumps({"request_id": "a", "arrival_s": 1.0, "prompt_tokens": 1, "output_tokens": 1})
    cases = [
        ('{"arrival_s": 1.0, "prompt_tokens": 1}', "output_tokens", "missing required key"),
        ('{"arrival_s": 2.0, "prompt_tokens": 1.5, "output_tokens": 1}', "prompt_tokens", "non-negative integer"),
        ('{"arrival_s": 2.0, "prompt_tokens": 1, "output_tokens": 1, "params": [1]}', "params", "JSON object"),
        ('{"arrival_s": 2.0, "prompt_tokens": 1, "output_tokens": 1, "model": 3}', "model", "expected a string"),
        ('{"arrival_s": 2.0, "prompt_tokens": 1e30, "output_tokens": 1}', "prompt_tokens", "at most 2,147,483,647"),
        ('{"arrival_s": 2.0, "prompt_tokens": 1, "output_tokens": 1, "priority": -3000000000}', "priority",
         "from -2,147,483,648 to 2,147,483,647"),
        ('{"request_id": ["a"], "arrival_s": 2.0, "prompt_tokens": 1, "output_tokens": 1}', "request_id",
         "expected a string or an integer"),
        ('{"request_id": 1.5, "arrival_s": 2.0, "prompt_tokens": 1, "output_tokens": 1}', "request_id",
         "expected a string or an integer"),
        ('{"arrival_s": 0.5, "prompt_tokens": 1, "output_tokens": 1}', "arrival_s", "arrival goes backwards"),
        ('{"arrival_s": 2.0,', None, "invalid JSON: Expecting property name enclosed in double quotes (column 19)"),
    ]
    for i, (text, field, needle) in enumerate(cases):
        p = write(f"t{i}.jsonl", ok + "\n" + text + "\n")
        with pytest.raises(TraceFormatError) as exc:
            list(read_canonical_jsonl(p))
        assert (exc.value.line, exc.value.field) == (2, field), text
        assert needle in str(exc.value)


def test_skip_and_streaming_raise(write):
    p = write("trace.csv", HEADER + "a,0.0,1,1\nb,x,1,1\nc,1.0,1,1\n")
    reader = read_trace(p, on_error="skip")
    assert [r.request_id for r in reader] == ["a", "c"]
    assert [(e.line, e.field) for e in reader.errors] == [(3, "arrival_s")]
    got = []
    with pytest.raises(TraceFormatError):
        for r in read_trace(p):
            got.append(r.request_id)
    assert got == ["a"]  # rows before the bad one were already delivered


_JSONL_ROW = '{"request_id": %s, "arrival_s": 1, "prompt_tokens": 5, "output_tokens": 2%s}\n'


@pytest.mark.parametrize("row, field, needle", [
    (_JSONL_ROW % ('"\\ud800"', ""), "request_id", "lone UTF-16 surrogate ('\\ud800')"),
    (_JSONL_ROW % ('"nul\\u0000id"', ""), "request_id", "NUL character"),
    (_JSONL_ROW % ('"a"', ', "tenant": "t\\u0000"'), "tenant", "NUL character"),
    (_JSONL_ROW % ('"a"', ', "model": "m\\udfff"'), "model", "lone UTF-16 surrogate"),
    (_JSONL_ROW % ('"a"', ', "params": {"stop": ["\\ud83d"]}'), "params", "lone UTF-16 surrogate"),
])
def test_text_no_database_stores_is_a_bad_row_naming_its_field(write, row, field, needle):
    """A lone surrogate crashed the replay in the recorder with no file or line; a NUL lost the row
    on PostgreSQL. The reader refuses them as it refuses any bad value (a pair is a character: kept)."""
    p = write("t.jsonl", _JSONL_ROW % ('"ok"', "") + row + _JSONL_ROW % ('"\\ud83d\\ude00"', ""))
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p))
    assert (e.value.line, e.value.field) == (2, field) and needle in e.value.reason
    reader = read_trace(p, on_error="skip")
    assert [r.request_id for r in reader] == ["ok", "\U0001F600"] and reader.skipped == 1


@pytest.mark.parametrize("row, field", [("nul\0id,1,5,2,\n", "request_id"), ("a,1,5,2,t\0\n", "tenant")])
def test_a_nul_in_a_csv_field_is_a_bad_row(write, row, field):
    p = write("t.csv", "request_id,arrival_s,prompt_tokens,output_tokens,tenant\n" + row)
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, "canonical"))
    assert (e.value.line, e.value.field) == (2, field) and "NUL character" in e.value.reason


def test_a_nul_in_an_id_of_a_four_column_csv_is_a_bad_row(write):
    p = write("p.csv", HEADER + "a,0,5,2\nnul\0id,1,5,2\n")  # the four-column fast path
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, "canonical"))
    assert (e.value.line, e.value.field) == (3, "request_id") and "NUL character" in e.value.reason


@pytest.mark.parametrize("header", ["Request_ID,Arrival_S,Prompt_Tokens,Output_Tokens,Model",
                                    "REQUEST_ID, arrival_s ,prompt_tokens,OUTPUT_TOKENS,MODEL"])
def test_csv_header_names_are_matched_ignoring_case(write, header):
    p = write("c.csv", header + "\na,0.5,10,2,m\n")
    assert detect_format(p) == "canonical"
    assert list(read_trace(p)) == [TraceRequest("a", 0.5, 10, 2, model="m")]


def test_jsonl_empty_model_tenant_and_prompt_are_missing_as_empty_csv_cells(write):
    # (a model named '' would be rejected by a replay: no deployment serves it)
    row = '{"request_id": "a", "arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "model": "%s", "tenant": "%s", "prompt": "%s"}\n'
    jsonl = write("c.jsonl", row % ("", " ", "") + row.replace('"a"', '"b"') % (" m ", "t", " p "))
    csv_ = write("c.csv", HEADER.strip() + ",model,tenant,prompt\na,0,1,1,,  ,\nb,0,1,1, m ,t, p \n")
    expected = [TraceRequest("a", 0.0, 1, 1), TraceRequest("b", 0.0, 1, 1, model="m", tenant="t", prompt=" p ")]
    assert list(read_trace(jsonl)) == list(read_trace(csv_)) == expected


EPOCH_REFUSED = ("the first request arrives at 1,700,000,000.000 s, 19,676 days after time 0: canonical arrival_s is "
                 "kept as written, and a replay runs from 0, so it would idle 19,676 simulated days before this request "
                 "(about 27 hours of wall time: ~5 s a simulated day at the default control.tick_s of 1 s); say which "
                 "you mean: --opt rebase=true (read_trace(..., rebase=True)) starts the trace at its first arrival "
                 "(absolute times, such as Unix epoch seconds), --opt rebase=false replays it as written, idling from 0")


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl"])
def test_a_far_first_arrival_is_refused_unless_rebase_is_said_and_rebase_starts_the_trace_there(write, name):
    # (a trace in Unix epoch seconds was only warned of: `sim replay` then idled 1.7e9 s, ticking, for days)
    rows = [("a", "1700000000.0", "x"), ("b", "1700000001.5", "10"), ("c", "1700000003", "10")]  # a: a bad count
    if name.endswith(".csv"):
        p = write(name, HEADER + "".join(f"{i},{t},{n},5\n" for i, t, n in rows))
        line = 2
    else:
        p = write(name, "".join(json.dumps({"request_id": i, "arrival_s": float(t), "prompt_tokens": n,
                                            "output_tokens": 5}) + "\n" for i, t, n in rows))
        line = 1
    with pytest.raises(TraceFormatError, match="field 'prompt_tokens'"):
        list(read_trace(p))  # (the first row's own error first)
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(p, on_error="skip"))  # (a whole-file error: not skipped with the bad row)
    assert (info.value.line, info.value.field, info.value.reason) == (line, "arrival_s", EPOCH_REFUSED)
    with pytest.raises(TraceFormatError) as info:
        list(read_trace(write("f" + name[1:], (HEADER + "b,1700000000,1,1\n") if name.endswith(".csv") else
                              '{"arrival_s": 1700000000, "prompt_tokens": 1, "output_tokens": 1}\n')))
    assert (info.value.line, info.value.field, info.value.reason) == (line, "arrival_s", EPOCH_REFUSED)
    with pytest.raises(TraceFormatError, match="19,676 days"):
        list(read_trace(p, on_error="skip", rebase=None))  # (None: not said, as `--opt rebase=null`)
    kept = [(r.request_id, r.arrival_s) for r in read_trace(p, on_error="skip", rebase=False)]
    assert kept == [("b", 1700000001.5), ("c", 1700000003.0)]  # as written, when said
    # time 0 is the first arrival that reads, the bad row's too (a bad token count does not move it)
    assert [(r.request_id, r.arrival_s) for r in read_trace(p, on_error="skip", rebase=True)] == [
        ("b", 1.5), ("c", 3.0)]
    with pytest.raises(ValueError, match="rebase must be true or false, got 'yes'"):
        read_trace(p, rebase="yes")


def test_a_far_first_arrival_gives_the_wall_time_of_its_lead_in(write):
    with pytest.raises(TraceFormatError, match=r"arrives at 172,800.000 s, 2.0 days after time 0: .* idle 2.0 simulated "
                                               r"days before this request \(about 10 s of wall time"):
        list(read_trace(write("d.csv", HEADER + "a,172800,1,1\n")))


def test_rebase_keeps_the_order_check_and_a_near_first_arrival_is_not_refused(write):
    p = write("n.csv", HEADER + "a,86400,1,1\nb,86401,1,1\n")
    assert [r.arrival_s for r in read_trace(p)] == [86400.0, 86401.0]  # (a day: kept as written)
    p = write("o.csv", HEADER + "a,5,x,1\nb,4,1,1\nc,6,1,1\n")
    reader = read_trace(p, on_error="skip", rebase=True)
    assert [(r.request_id, r.arrival_s) for r in reader] == [("c", 1.0)]
    assert "arrival goes backwards" in str(reader.errors[1])


@pytest.mark.parametrize(("params", "field", "why"), [
    ({"temperature": "hot"}, "params.temperature", "must be a number, not 'hot'"),
    ({"top_p": True}, "params.top_p", "must be a number"),
    ({"top_k": 0.5}, "params.top_k", "must be an integer, not 0.5"),
    ({"seed": "7"}, "params.seed", "must be an integer"),
    ({"stop": ["a", 3]}, "params.stop", "must be a string or a list of strings"),
    # (JSON's NaN and Infinity, which Python's json reads, were taken as a temperature)
    ({"temperature": math.nan}, "params.temperature", "must be a finite number, not nan"),
    ({"top_p": math.inf}, "params.top_p", "must be a finite number, not inf"),
    ({"temperature": -math.inf}, "params.temperature", "must be a finite number, not -inf"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_known_param_of_the_wrong_type_names_its_line_and_field(tmp_path, params, field, why, suffix):
    """A ``"temperature": "hot"`` was read as text and served (the caches read it to tell a sampled request),
    where a live replay of the same trace refused it."""
    path = tmp_path / f"t{suffix}"
    row = {"request_id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 3, "params": params}
    if suffix == ".jsonl":
        path.write_text(json.dumps(row) + "\n")
        line = 1
    else:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(row))
            w.writerow([*list(row.values())[:4], json.dumps(params)])
        line = 2
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(path))
    assert f"{path}:{line}: field '{field}'" in str(e.value) and why in str(e.value)


def test_free_form_and_null_params_are_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"request_id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 3, "params": {
        "temperature": None, "seed": 3, "stop": ["x"], "my_plugin_hint": {"k": [1, 2]}}}) + "\n")
    (r,) = read_trace(path)
    assert dict(r.params)["seed"] == 3 and dict(r.params)["stop"] == ("x",) and "my_plugin_hint" in dict(r.params)
