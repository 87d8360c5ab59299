"""A CSV quote left open (sim/traces/csv_quotes.py): the lines after it are read into one field, so
their rows were lost without a word. Every CSV reader now names the line the quote opened on."""

from __future__ import annotations

import numpy as np
import pytest

from sim.traces import TraceFormatError, TraceRequest, read_trace, write_canonical

CANON = "request_id,arrival_s,prompt_tokens,output_tokens,prompt\n"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _read(path, **options):
    reader = read_trace(path, rng=np.random.default_rng(0), **options)
    return reader, [r.request_id for r in reader]


def _error(path, **options) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as e:
        _read(path, **options)
    return e.value


def test_a_quote_never_closed_is_named_where_it_opened_not_read_as_a_field_to_the_end(write):
    # (2 requests were read, rows c and d became b's prompt; with on_error=skip, 0 rows were skipped)
    p = write("unterm.csv", CANON + 'a,0,1,1,x\nb,1,1,1,"unterminated\nc,2,1,1,y\nd,3,1,1,z\n')
    e = _error(p)
    assert (e.line, e.field) == (3, "prompt")
    assert e.reason == ("a quote opened on line 3 is never closed: the field runs to the end of the file, and lines 4-5 "
                        "were read into this field, not as rows; close the quote or remove it")
    reader, ids = _read(p, on_error="skip")
    assert ids == ["a"] and reader.skipped == 1 and "lines 4-5 were read into this field" in str(reader.errors[0])


def test_an_azure_quote_never_closed_names_its_line_not_the_good_row_before_it(write):
    # (the error named line 3, a good row, and with on_error=skip lines 5-7 were lost as "1 bad row skipped")
    rows = "".join(f"2023-11-16 18:00:0{s},{s},{s}\n" for s in range(6))
    lines = rows.splitlines(keepends=True)
    p = write("q.csv", AZURE + "".join(lines[:2]) + '"' + "".join(lines[2:]))
    e = _error(p)
    assert (e.line, e.field) == (4, "TIMESTAMP") and "lines 5-7 were read into this field, not as rows" in e.reason
    reader, ids = _read(p, on_error="skip")
    assert ids == ["0", "1"] and reader.skipped == 1 and reader.errors[0].line == 4


@pytest.mark.parametrize("name, text, line, field, swallowed, kept", [
    # closed by a later quote: the rows in between read as the field
    ("mid.csv", CANON + 'a,0,1,1,x\nb,1,1,1,"unterminated\nc,2,1,1,y\nd,3,1,1,"z"\ne,4,1,1,w\n', 3, "prompt",
     "line 4 ('c,2,1,1,y'), which reads as a row of this file: a quote left open reads the rows "
     "after it into one field (here lines 4-5 were read into this field", ["a", "e"]),
    # a quote opening a row: that row's line is the field's first
    ("basic.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,1,1\n\"b,1,1,1\nc\",2,1,1\nd,3,1,1\n", 3,
     "request_id", "line 3 ('b,1,1,1'), which reads as a row of this file: a quote left open reads the rows "
     "after it into one field (here line 4 was read into this field, not as a row",
     ["a", "d"]),
    # columns the reader keeps whatever they hold, or does not read
    ("bg.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,ChatGPT,1,2,3,\"API log\n"
     "2,ChatGPT,1,2,3,API log\n3,GPT-4,1,2,3,\"API log\"\n4,GPT-4,1,2,3,API log\n", 2, "Log Type",
     "line 3 ('2,ChatGPT,1,2,3,API log'), which reads as a row of this file", ["1"]),
    ("v.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n1,2,3,\"0.5\n4,5,9,0.8\n6,7,13,\"0.9\"\n"
     "8,9,17,0.1\n", 2, "pd_ratio", "line 3 ('4,5,9,0.8'), which reads as a row of this file", ["1"]),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens,Note\n2023-11-16 18:00:00,1,1,\"x\n2023-11-16 18:00:01,2,2,y\n"
     "2023-11-16 18:00:02,2,2,\"z\"\n2023-11-16 18:00:03,2,2,w\n", 2, "Note",
     "line 3 ('2023-11-16 18:00:01,2,2,y'), which reads as a row of this file", ["1"]),
])
def test_a_quote_closed_by_a_later_one_is_named_where_it_opened(write, name, text, line, field, swallowed, kept):
    p = write(name, text)
    e = _error(p)
    assert (e.line, e.field) == (line, field)
    assert e.reason.startswith(f"the quoted field opened on line {line} holds line ")
    assert "which reads as a row of this file: a quote left open reads the rows after it into one field" in e.reason
    assert "is not closed" not in e.reason  # (it may be closed: a field holding such a line on purpose reads the same)
    assert swallowed in e.reason
    reader, ids = _read(p, on_error="skip")
    assert reader.skipped == 1 and ids == kept  # the rows before the quote's and after the closing one's


def test_a_field_that_holds_line_breaks_on_purpose_is_read(write):
    # lines of the header's width, but not numbers where rows have them
    prompt = 'q\n1,2,3\nhello, world, a, b, c\n4,five,6,7,"8"\n'

    p = write("ml.csv", CANON + 'a,0,1,1,"' + prompt.replace('"', '""') + '"\nb,1,1,1,"x\r\ny"\nc,2,1,1,z\n')
    reqs = list(read_trace(p))
    assert [(r.request_id, r.prompt) for r in reqs] == [("a", prompt), ("b", "x\r\ny"), ("c", "z")]
    p = write("ml_bad.csv", CANON + 'a,0,1,1,"two\nlines"\nb,x,1,1,ok\n')
    assert _error(p).line == 4  # (a later row's line is still counted past the quoted line break)


def test_a_prompt_that_holds_a_row_on_purpose_is_told_to_be_written_as_jsonl(write):
    # (the error said "a quote opened on line 2 is not closed where its field should end" of a closed quote)
    p = write("p.csv", CANON + 'a,0,1,1,"the rows:\nb,1,1,1,y\n"\n')
    assert _error(p).reason == (
        "the quoted field opened on line 2 holds line 3 ('b,1,1,1,y'), which reads as a row of this file: a quote left "
        "open reads the rows after it into one field (here lines 3-4 were read into this field, not as rows), so such "
        "a field is refused; if a quote was left open, close it or remove it; if the field holds that line on purpose, "
        "write the trace as canonical JSON Lines (write_canonical to a .jsonl path), which holds any text")


def test_write_canonical_refuses_a_csv_its_reader_would_refuse_and_jsonl_holds_it(tmp_path):
    # (write_canonical wrote that CSV, which read_trace then refused)
    reqs = [TraceRequest("a", 0.0, 1, 1, prompt="the rows:\nb,1,1,1,y\n"), TraceRequest("b", 1.0, 1, 1, prompt="z")]
    with pytest.raises(ValueError, match=r"request 'a': its prompt holds a line that reads as a row of this CSV "
                                         r"\('b,1,1,1,y'\).*write the trace as JSON Lines"):
        write_canonical(reqs, tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()  # (nothing half-written)
    write_canonical(reqs, tmp_path / "p.jsonl")
    assert list(read_trace(tmp_path / "p.jsonl")) == reqs
    fine = [TraceRequest("a", 0.0, 1, 1, prompt='q\n1,2,3\nhello, world, a, b, c\n4,five,6,7,"8"\n')]
    write_canonical(fine, tmp_path / "ok.csv")  # (line breaks whose lines read as no row: CSV holds them)
    assert list(read_trace(tmp_path / "ok.csv")) == fine
