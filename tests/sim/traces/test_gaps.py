"""A gap of more than a day between two rows is refused in every format with timestamps (`sim.traces.gaps`): a
replay would idle through it tick by tick, for hours of wall time, saying nothing; ``max_gap_s`` allows it."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from sim.traces import FORMAT_OPTIONS, TraceFormatError, read_trace
from sim.traces.__main__ import main

CANONICAL = "request_id,arrival_s,prompt_tokens,output_tokens\n"
RNG = partial(np.random.default_rng, 0)
BURSTGPT = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def _mooncake(*timestamps: float, key: str = "") -> str:
    return "".join(json.dumps({**({key: f"c{i}"} if key else {}), "timestamp": t, "input_length": 10,
                               "output_length": 5, "hash_ids": [1]}) + "\n" for i, t in enumerate(timestamps))


def _gapped(name: str) -> tuple[str, str, str, int, str]:
    """(file name, text with a far row on its last line, format, that line, the field named)."""
    return {
        "csv": ("g.csv", CANONICAL + "a,0,10,5\nb,1,10,5\nc,1700000000,10,5\n", "canonical", 4, "arrival_s"),
        "jsonl": ("g.jsonl", "".join(json.dumps({"request_id": i, "arrival_s": t, "prompt_tokens": 1,
                                                  "output_tokens": 1}) + "\n" for i, t in (("a", 0), ("b", 90000.5))),
                  "canonical", 2, "arrival_s"),
        "mooncake": ("m.jsonl", _mooncake(0, 1e300), "mooncake", 2, "timestamp"),
        "bailian": ("q.jsonl", _mooncake(0, 5, 200_000, key="chat_id"), "bailian", 3, "timestamp"),
        "azure": ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,10\n"
                            "2023-11-16 18:17:04.5,10,10\n2023-12-16 18:17:04.00,10,10\n", "azure", 4, "TIMESTAMP"),
        "burstgpt": ("b.csv", BURSTGPT + "5000000,ChatGPT,10,10,20,API log\n5100001,ChatGPT,10,10,20,API log\n",
                     "burstgpt", 3, "Timestamp"),
    }[name]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "mooncake", "bailian", "azure", "burstgpt"])
def test_a_gap_over_a_day_is_refused_naming_file_line_field_and_the_way_out(write, kind):
    # (a canonical row at 1.7e9 among rows at 0 and 1 replayed as written: ~27 hours of idle ticking, silently)
    name, text, fmt, line, field = _gapped(kind)
    p = write(name, text)
    for on_error in ("raise", "skip"):  # (a whole-file error: skipped, every later row would be far ahead too)
        with pytest.raises(TraceFormatError) as info:
            list(read_trace(p, fmt, on_error=on_error, rng=RNG))
        err = info.value
        assert (err.path, err.line, err.field) == (str(p), line, field)
        assert "after the row before it" in err.reason and "simulated days before this request" in err.reason
        assert "a gap longer than a day (86,400 s) is refused" in err.reason and "--opt max_gap_s=" in err.reason
    allowed = list(read_trace(p, fmt, max_gap_s=float("inf"), rng=RNG))
    assert len(allowed) == text.count("\n") - (not name.endswith(".jsonl"))  # (every row, a CSV's header aside)


def test_the_number_the_error_suggests_allows_the_gap(write):
    p = write("g.csv", CANONICAL + "a,0,10,5\nb,1,10,5\nc,100000.25,10,5\n")
    with pytest.raises(TraceFormatError, match=r"arrives 99,999.250 s after the row before it \(at 100,000.250 s, "
                                               r"the row before at 1.000 s\).*--opt max_gap_s=100000 "):
        list(read_trace(p))
    assert [r.arrival_s for r in read_trace(p, max_gap_s=100_000)] == [0.0, 1.0, 100000.25]
    with pytest.raises(TraceFormatError, match="longer than 50,000.000 s \\(max_gap_s\\)"):
        list(read_trace(p, max_gap_s=50_000))


def test_gaps_of_hours_and_of_exactly_a_day_read_as_before(write):
    p = write("n.csv", CANONICAL + "a,0,1,1\nb,7200,1,1\nc,93600,1,1\n")  # (two hours, then a day exactly)
    assert [r.arrival_s for r in read_trace(p)] == [0.0, 7200.0, 93600.0]
    p = write("r.csv", CANONICAL + "a,1700000000,1,1\nb,1700007200,1,1\n")  # (epoch times, rebased: 2 hours apart)
    assert [r.arrival_s for r in read_trace(p, rebase=True)] == [0.0, 7200.0]


def test_a_bad_row_between_does_not_hide_the_gap_and_the_option_is_checked(write):
    p = write("g.csv", CANONICAL + "a,0,1,1\nb,5,x,1\nc,200000,1,1\n")
    with pytest.raises(TraceFormatError, match="g.csv:4: field 'arrival_s': this row arrives 200,000.000 s"):
        list(read_trace(p, on_error="skip"))
    for bad in (0, -1, "a day", True, float("nan")):
        with pytest.raises(ValueError, match="max_gap_s must be a number of seconds > 0"):
            read_trace(p, max_gap_s=bad)
    assert all("max_gap_s" in FORMAT_OPTIONS[f] for f in ("azure", "mooncake", "canonical", "burstgpt", "bailian"))


def test_the_inspector_refuses_the_gap_and_names_a_long_one_it_reads(write, capsys):
    p = write("g.csv", CANONICAL + "a,0,1,1\nb,1,1,1\nc,1700000000,1,1\n")
    with pytest.raises(SystemExit) as info:
        main([str(p)])
    assert info.value.code == 2
    assert f"error: {p}:4: field 'arrival_s': this row arrives 1,699,999,999.000 s" in capsys.readouterr().err
    p = write("n.csv", CANONICAL + "a,0,1,1\nb,1,1,1\nc,7201,1,1\n")
    assert main([str(p)]) == 0
    assert "longest gap 7,200.0 s (2 hours idle, up to the arrival at 7,201.000 s)" in capsys.readouterr().out
