"""The BurstGPT reader (sim/traces/burstgpt.py) on small files written here (no BurstGPT file is
available to the project: /work/shared/data/README.md)."""

from __future__ import annotations

import logging

import pytest

from sim.traces import TraceFormatError, TraceRequest, detect_format, read_trace
from sim.traces.burstgpt import read_burstgpt

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
ROWS = ("5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"     # failed: 0 response tokens
        "118.5,GPT-4,417,276,693,API log\n"
        "118.5,ChatGPT,30,7,37,API log\n")


def _arrivals(reqs):
    return [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs]


def test_rows_become_requests_from_the_first_timestamp(write):
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    reader = read_trace(p)
    assert reader.format == "burstgpt"
    reqs = list(reader)
    assert _arrivals(reqs) == [("0", 0.0, 472, 18), ("1", 40.0, 1087, 0), ("2", 113.5, 417, 276),
                               ("3", 113.5, 30, 7)]
    assert reqs[0] == TraceRequest("0", 0.0, 472, 18)  # no model, tenant or hashes by default
    assert reader.dropped == {} and reader.skipped == 0


def test_columns_are_matched_by_name_ignoring_case_spaces_and_order(write):
    text = (" log type , TIMESTAMP ,request TOKENS,Response Tokens,Total tokens, model \n"
            "Conversation log,5,472,18,490,ChatGPT\nAPI log,7,417,276,693,GPT-4\n")
    p = write("reordered.csv", text)
    assert detect_format(p) == "burstgpt"
    reqs = list(read_trace(p, models=["gpt-4"], model_column=True))
    assert _arrivals(reqs) == [("1", 0.0, 417, 276)] and reqs[0].model == "GPT-4"
    # Total tokens, Model and Log Type are needed only by the options that read them
    p = write("three.csv", "Timestamp,Request tokens,Response tokens\n0,1,2\n1.25,3,4\n")
    assert _arrivals(read_trace(p)) == [("0", 0.0, 1, 2), ("1", 1.25, 3, 4)]
    with pytest.raises(TraceFormatError, match=r"three\.csv:1: field 'Model': missing required column"):
        read_trace(p, model_column=True).__next__()
    with pytest.raises(TraceFormatError, match=r"three\.csv:1: field 'Log Type': missing required column"):
        list(read_trace(p, log_types="api"))


def test_failed_rows_are_kept_by_default_and_dropped_counted_and_logged(write, caplog):
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        reader = read_trace(p, failed="drop")
        reqs = list(reader)
    assert [r.request_id for r in reqs] == ["0", "2", "3"]  # a dropped row still uses up its index
    assert reader.dropped == {"failed": 1}
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: left out 1 of 4 rows: 1 failed (Response tokens 0, failed='drop')"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        assert len(list(read_trace(p))) == 4
    assert caplog.records == []


def test_a_read_stopped_early_says_what_it_left_out_so_far(write, caplog):
    from sim.traces import apply_transforms

    p = write("BurstGPT_1.csv", HEADER + ROWS)
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        with read_trace(p, failed="drop") as reader:
            assert [r.request_id for r in apply_transforms(reader, window=(None, 100))] == ["0"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: left out 1 of the first 3 rows (the read stopped there): 1 failed (Response tokens 0, failed='drop')"]


def test_model_and_log_type_filters(write, caplog):
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    reader = read_trace(p, models="ChatGPT")
    assert [r.request_id for r in reader] == ["0", "1", "3"] and reader.dropped == {"models": 1}
    reader = read_trace(p, log_types=["API log"], failed="drop")
    assert _arrivals(reader) == [("2", 0.0, 417, 276), ("3", 0.0, 30, 7)]  # first kept row at 0.0
    assert reader.dropped == {"log_types": 2}  # the failed row is left out as a conversation first
    reader = read_trace(p, log_types="conversation, api")
    assert len(list(reader)) == 4 and reader.dropped == {}
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        list(read_trace(p, models=["chatgpt", "gpt4"]))  # a typo in one value: said, not silent
    assert "models value(s) 'gpt4' matched no row (seen: ChatGPT, GPT-4)" in caplog.records[-1].getMessage()
    with pytest.raises(TraceFormatError, match=r"no row kept: the options left out all 4 rows \(4 with a Model not "
                                               r"in models\); models value\(s\) 'gpt4' matched no row"):
        list(read_trace(p, models="gpt4"))


def test_a_value_that_matches_no_row_is_named_as_given(write, caplog):
    """The filters match ignoring case (and " log"), but the warning and the error name a value the
    way the option gave it, so the user finds it in their command line."""
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        list(read_trace(p, models="ChatGPT, Claude-2", log_types=["API log", "Web Log"]))
    message = caplog.records[-1].getMessage()
    assert "models value(s) 'Claude-2' matched no row (seen: ChatGPT, GPT-4)" in message
    assert "log_types value(s) 'Web Log' matched no row" in message
    with pytest.raises(TraceFormatError, match=r"models value\(s\) 'GPT4', 'Llama' matched no row"):
        list(read_trace(p, models=["Llama", "GPT4", "gpt4"]))  # one value given twice: named once, first spelling



def test_a_value_whose_rows_the_other_filter_left_out_is_not_said_to_match_no_row(write):
    """models=gpt-5 leaves out every row: log_types=api still saw its 'API log' rows (it said
    "matched no row (seen: none)", as if the file had none)."""
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, models="gpt-5", log_types="api"))
    assert "models value(s) 'gpt-5' matched no row (seen: ChatGPT, GPT-4)" in str(e.value)
    assert "log_types value(s)" not in str(e.value)
    reader = read_trace(p, models="GPT-4", log_types="conversation")
    with pytest.raises(TraceFormatError):
        list(reader)
    assert reader.dropped == {"models": 3, "log_types": 1}  # each row under the first filter that left it out


def test_model_column_names_the_request_model(write):
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    assert [r.model for r in read_trace(p, model_column=True)] == ["ChatGPT", "ChatGPT", "GPT-4", "ChatGPT"]


@pytest.mark.parametrize("options, message", [
    ({"failed": "skip"}, "unknown failed 'skip' for format 'burstgpt'; valid choices: keep, drop"),
    ({"model_column": "yes"}, "model_column must be true or false, got 'yes'"),
    ({"models": 4}, "models must be a list of strings or a comma-separated string, got 4"),
    ({"log_types": []}, "log_types names no value"),
    ({"qps": 2}, r"unknown option\(s\) 'qps' for trace format 'burstgpt'; valid options: models, log_types, "
                 r"failed, model_column, on_error"),
])
def test_bad_options_fail_before_reading(write, options, message):
    p = write("BurstGPT_1.csv", HEADER + ROWS)
    with pytest.raises(ValueError, match=message):
        read_trace(p, "burstgpt", **options)


@pytest.mark.parametrize("row, field, reason", [
    ("7,ChatGPT,x,1,1,API log", "Request tokens", "expected a non-negative integer, got 'x'"),
    ("7,ChatGPT,1,-3,1,API log", "Response tokens", "expected a non-negative integer, got '-3'"),
    ("nan,ChatGPT,1,1,2,API log", "Timestamp", "expected a finite non-negative number of seconds, got 'nan'"),
    ("-1,ChatGPT,1,1,2,API log", "Timestamp", "expected a finite non-negative number of seconds, got '-1'"),
    ("2019-01-01,ChatGPT,1,1,2,API log", "Timestamp", "expected a finite non-negative number of seconds"),
    ("7,ChatGPT,1", "Response tokens", "row has 3 fields, expected 6"),
    ("7,ChatGPT,1,1,2,API log,extra", "Log Type", "row has 7 fields, the header 6"),
    ("4,ChatGPT,1,1,2,API log", "Timestamp", "arrival goes backwards: 4 s is before the previous row's 5 s"),
])
def test_a_bad_row_names_file_line_and_field(write, row, field, reason):
    p = write("bad.csv", HEADER + "5,ChatGPT,472,18,490,Conversation log\n\n" + row + "\n")
    with pytest.raises(TraceFormatError) as exc:
        list(read_trace(p))
    assert (exc.value.path, exc.value.line, exc.value.field) == (str(p), 4, field)
    assert reason in str(exc.value) and str(exc.value).startswith(f"{p}:4: field {field!r}: ")
    reader = read_trace(p, on_error="skip")  # skipped: counted apart from the rows options drop
    assert [r.request_id for r in reader] == ["0"] and reader.skipped == 1 and reader.dropped == {}


def test_a_skipped_bad_first_row_whose_timestamp_reads_is_the_clock_origin(write):
    # (a bad token count moved time 0 to the next row: a window was cut elsewhere)
    p = write("bad.csv", HEADER + "1,ChatGPT,x,1,1,API log\n3,ChatGPT,1,1,2,API log\n4.5,GPT-4,1,1,2,API log\n")
    assert _arrivals(read_trace(p, on_error="skip")) == [("1", 2.0, 1, 1), ("2", 3.5, 1, 1)]
    # the first row the options keep: a bad row they would leave out sets no origin, nor one whose time is bad
    assert _arrivals(read_trace(p, on_error="skip", models="GPT-4")) == [("2", 0.0, 1, 1)]
    p = write("bad2.csv", HEADER + "x,ChatGPT,1,1,1,API log\n1,ChatGPT,1,0,1,API log\n2,ChatGPT,x,1,1,API log\n"
              "3,ChatGPT,1,1,2,API log\n")
    assert _arrivals(read_trace(p, on_error="skip", failed="drop")) == [("3", 1.0, 1, 1)]


def test_empty_and_header_only_files(write):
    with pytest.raises(TraceFormatError, match="empty file"):
        list(read_burstgpt(write("e.csv", "")))
    with pytest.raises(TraceFormatError, match="no data rows"):
        list(read_burstgpt(write("h.csv", HEADER + "\n")))


def test_filters_stay_right_past_the_cache_of_distinct_values(write, monkeypatch, caplog):
    from sim.traces import burstgpt

    monkeypatch.setattr(burstgpt, "_MAX_CACHED", 2)  # (10,000 distinct Model values in a real run)
    rows = "".join(f"{i},m{i % 5},1,1,2,API log\n" for i in range(20))
    p = write("many.csv", HEADER + rows)
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        reqs = list(read_trace(p, models="m3,m4,nope", model_column=True))
    assert [r.model for r in reqs] == ["m3", "m4"] * 4
    assert "'nope' matched no row (seen: m0, m1, m2, m3, m4)" in caplog.records[-1].getMessage()


def test_a_nul_in_a_model_name_kept_as_the_model_is_a_bad_row(write):
    p = write("b.csv", HEADER + "5,GPT\0-4,10,2,12,API log\n6,GPT-4,10,2,12,API log\n")
    with pytest.raises(TraceFormatError) as e:
        list(read_trace(p, "burstgpt", model_column=True))
    assert (e.value.line, e.value.field) == (2, "Model") and "NUL character" in e.value.reason
    reader = read_trace(p, "burstgpt", model_column=True, on_error="skip")
    assert [(r.request_id, r.arrival_s, r.model) for r in reader] == [("1", 1.0, "GPT-4")] and reader.skipped == 1
    assert len(list(read_trace(p, "burstgpt"))) == 2  # (not kept: not stored, not refused)


def test_a_value_whose_only_row_was_bad_is_said_so_not_said_to_match_no_row(write):
    """models=ChatGPT with on_error=skip, the one ChatGPT row skipped as going backwards: the error said
    'the options left out all 4 rows ...; matched no row (seen: , GPT-4)'."""
    p = write("e.csv", HEADER + "1,,1,2,3,API log\n2, ,1,2,3,\n3,GPT-4,1,2,3,API log\n2.5,ChatGPT,1,2,3,API log\n")
    reader = read_trace(p, models="ChatGPT,Claude", on_error="skip")
    with pytest.raises(TraceFormatError) as e:
        list(reader)
    assert reader.skipped == 1 and reader.dropped == {"models": 3}
    assert str(e.value) == (
        f"{p}: no row kept: the options left out 3 of the 4 rows (3 with a Model not in models), and the other row "
        "was a bad row, skipped; models value(s) matched only by bad rows, which were skipped: 'ChatGPT' (the first "
        "at line 5); models value(s) 'Claude' matched no row (seen: (empty), GPT-4)")


def test_the_model_column_names_one_model_as_models_matches_them_by_its_first_spelling(write):
    # (models= matched 'chatgpt ' ignoring case and spaces, and model_column copied it as written: a replay
    # then rejected it as an unknown model, though models=ChatGPT had kept it)
    p = write("m.csv", HEADER + "1,ChatGPT,1,2,3,API log\n2,chatgpt ,1,2,3,API log\n3, GPT-4,1,2,3,API log\n"
              "4,CHATGPT,1,2,3,API log\n5,gpt-4,1,2,3,API log\n")
    expected = ["ChatGPT", "ChatGPT", "GPT-4", "ChatGPT", "GPT-4"]
    assert [r.model for r in read_trace(p, model_column=True)] == expected
    assert [r.model for r in read_trace(p, models="chatgpt,gpt-4", model_column=True)] == expected
    assert [r.model for r in read_trace(p, models="GPT-4", model_column=True)] == ["GPT-4", "GPT-4"]


def test_the_values_seen_are_listed_once_however_they_are_spelt(write, caplog):
    # (it said "matched no row (seen: ChatGPT, chatgpt)", two values the filter takes for one)
    p = write("BurstGPT_1.csv", HEADER + "1,ChatGPT,10,5,15,API log\n2,chatgpt ,10,5,15,api\n3,GPT-4,1,1,2,API log\n")
    with caplog.at_level(logging.WARNING, logger="sim.traces"):
        list(read_trace(p, models="ChatGPT,Claude", log_types="conversation,api"))
    message = caplog.records[-1].getMessage()
    assert "models value(s) 'Claude' matched no row (seen: ChatGPT, GPT-4)" in message
    assert "log_types value(s) 'conversation' matched no row (seen: API log)" in message
