"""`python -m sim.traces`: a trace's summary, and bad input as one line on stderr."""

from __future__ import annotations

import pytest

from sim.traces.__main__ import main


def test_the_summary_of_a_small_trace(write, capsys):
    p = write("t.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\nb,2,30,4\n")
    assert main([str(p)]) == 0
    out = capsys.readouterr().out
    assert f"{p}: format canonical, 2 requests" in out and "span 2.0 s" in out


def test_requests_all_at_one_time_are_said_so_not_an_infinite_rate(write, capsys):
    p = write("t.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,3,10,2\nb,3,30,4\n")
    assert main([str(p)]) == 0
    out = capsys.readouterr().out
    assert "span 0 s: all 2 requests arrive at 3.000 s\n" in out and "inf" not in out and "nan" not in out


def test_the_summary_says_what_the_options_left_out(write, capsys):
    p = write("BurstGPT_1.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                                "5,ChatGPT,10,0,10,API log\n6,GPT-4,10,3,13,API log\n7,ChatGPT,5,2,7,API log\n")
    assert main([str(p), "--opt", "failed=drop", "--opt", "models=ChatGPT,gpt-4", "--opt", "model_column=true"]) == 0
    out = capsys.readouterr().out
    assert f"{p}: format burstgpt, 2 requests" in out and "left out by the options: failed 1\n" in out


@pytest.mark.parametrize(("args", "message"), [
    (["missing.csv"], "error: trace file not found: missing.csv"),
    (["{folder}"], "error: trace {folder} is a folder, not a file"),
    (["bundled:nope"], "error: unknown bundled trace 'nope'; valid names: azure_code"),
    (["{bad}", "--format", "vidr"], "error: unknown trace format 'vidr'"),
    (["{bad}"], "error: {bad}:3: field 'prompt_tokens': expected a non-negative integer, got 'x'"),
    (["{bad}", "--opt", "spread"], "error: --opt 'spread': expected KEY=VALUE, e.g. --opt failed=drop"),
    (["{bad}", "--opt", "a=1", "--opt", "a=2"], "error: --opt a is given twice"),
])
def test_bad_input_is_one_line_and_exit_2(write, capsys, args, message):
    bad = write("bad.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\nb,2,x,4\n")
    args = [a.replace("{bad}", str(bad)).replace("{folder}", str(bad.parent)) for a in args]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(message.replace("{bad}", str(bad)).replace("{folder}", str(bad.parent)))
