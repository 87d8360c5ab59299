"""`python -m sim.traces`: a trace's summary, and bad input as one line on stderr."""

from __future__ import annotations

import os

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


def test_the_summary_counts_the_bad_rows_on_error_skip_skipped_and_says_why(write, capsys):
    p = write("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,4808,10\n"
                        "2023-11-16 18:17:04.03,3180,8\n2023-11-16 18:17:05.1,12,abc\n")
    assert main([str(p), "--opt", "on_error=skip"]) == 0
    out = capsys.readouterr().out
    assert f"{p}: format azure, 2 requests" in out
    assert ("bad rows skipped (on_error=skip): 1; the first 1:\n"
            f"  {p}:4: field 'GeneratedTokens': expected a non-negative integer, got 'abc'\n") in out


@pytest.mark.parametrize(("args", "message"), [
    (["missing.csv"], "error: trace file not found: missing.csv"),
    (["{folder}"], "error: trace {folder} is a folder, not a file"),
    # (a pipe, <(cat x.csv), and /dev/null were "trace file not found")
    (["{fifo}"], "error: trace {fifo} is not a regular file but a pipe (such as <(...) or a named pipe): a trace is "
                 "read more than once"),
    (["/dev/null"], "error: trace /dev/null is not a regular file but a device: "),
    (["bundled:nope"], "error: unknown bundled trace 'nope'; valid names: azure_code"),
    (["{bad}", "--format", "vidr"], "error: unknown trace format 'vidr'"),
    (["{bad}"], "error: {bad}:3: field 'prompt_tokens': expected a non-negative integer, got 'x'"),
    (["{bad}", "--opt", "spread"], "error: --opt 'spread': expected KEY=VALUE, e.g. --opt failed=drop"),
    (["{bad}", "--opt", "a=1", "--opt", "a=2"], "error: --opt a is given twice"),
])
def test_bad_input_is_one_line_and_exit_2(write, capsys, args, message):
    bad = write("bad.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\nb,2,x,4\n")
    fifo = bad.parent / "fifo"
    os.mkfifo(fifo)  # (no writer: a reader that opened it would wait for ever)

    def named(text: str) -> str:
        return text.replace("{bad}", str(bad)).replace("{folder}", str(bad.parent)).replace("{fifo}", str(fifo))

    with pytest.raises(SystemExit) as exc:
        main([named(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(named(message))


def test_a_dash_is_standard_input_which_is_a_stream_not_a_missing_file(write, capsys, monkeypatch):
    # ("trace file not found: -"; docs/traces.md: a trace is a regular file, a stream is saved to one first)
    monkeypatch.chdir(write("t.csv", "").parent)
    with pytest.raises(SystemExit) as exc:
        main(["-"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: trace - is not a regular file but standard input (no trace "
                                                  "is read from it): a trace is read more than once")
    assert "save it to a file first" in err
    write("-", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\n")  # (a file of that name: read)
    assert main(["-"]) == 0 and capsys.readouterr().out.startswith("-: format canonical, 1 request,")


TRACE = "request_id,arrival_s,prompt_tokens,output_tokens\n" + "".join(
    f"r{i},{i},{100 * (i + 1)},{10 * (i + 1)}\n" for i in range(10))


def test_the_transforms_are_applied_and_said(write, capsys):
    p = write("t.csv", TRACE)
    assert main([str(p), "--window-start", "2", "--window-end", "6", "--prompt-scale", "0.5",
                 "--max-output-tokens", "40"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{p}: format canonical, 4 requests, read in ")
    assert out[1] == ("transforms applied as `controlplane sim replay --seed 0` applies them: "
                      "--window-start 2 --window-end 6 --prompt-scale 0.5 --max-output-tokens 40")
    assert out[2] == "span 3.0 s, mean rate 1.000 req/s, IAT CV 0.00, first arrival at 0.000 s"
    assert out[3] == "prompt tokens: p50 225, p90 285, p99 298, max 300"  # rows 2-5: 300..600 halved
    assert out[4] == "output tokens: p50 40, p90 40, p99 40, max 40"  # 30..60 cut to 40


def test_without_transforms_no_transforms_line(write, capsys):
    p = write("t.csv", TRACE)
    assert main([str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and not any(line.startswith("transforms") for line in out)


def test_the_summary_is_of_the_requests_the_replay_prepares(write, capsys):
    """The same `TraceTransforms` and seed streams as `controlplane sim replay --seed 5`: the
    seeded rate change keeps the same requests."""
    from sim.replay import TraceTransforms, prepare_trace

    p = write("t.csv", TRACE)
    expected = list(prepare_trace(str(p), seed=5, transforms=TraceTransforms(
        repeat=3, rate_scale=0.5, rate_profile=((0, 1), (20, 2)), speed_up=2)))
    assert main([str(p), "--seed", "5", "--repeat", "3", "--rate-scale", "0.5", "--rate-profile", "0:1,20:2",
                 "--speed-up", "2"]) == 0
    out = capsys.readouterr().out
    assert f"format canonical, {len(expected)} requests" in out
    assert "--speed-up 2 --repeat 3 --rate-scale 0.5 --rate-profile 0:1,20:2\n" in out
    span = expected[-1].arrival_s - expected[0].arrival_s
    assert f"span {span:,.1f} s, mean rate {(len(expected) - 1) / span:.3f} req/s" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--speed-up", "0"], "error: --speed-up must be a finite number > 0, got 0"),
    (["--repeat", "0"], "error: --repeat must be an integer >= 1, got 0"),
    (["--window-start", "10", "--window-end", "5"], "error: --window-end (5) must be greater than --window-start (10)"),
    # (--limit 0 summarized no request, where `controlplane sim replay --limit 0` is refused: the same least value)
    (["--limit", "0"], "error: --limit must be an integer >= 1, got 0"),
    (["--limit", "-1"], "error: --limit must be an integer >= 1, got -1"),
    (["--max-prompt-tokens", "0"], "error: --max-prompt-tokens must be an integer >= 1"),
    (["--rate-profile", "0:1,x"], "error: --rate-profile: point 'x' is not TIME_S:FACTOR"),
])
def test_a_bad_transform_is_named_by_its_option(write, capsys, args, message):
    p = write("t.csv", TRACE)
    with pytest.raises(SystemExit) as exc:
        main([str(p), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(message)


def test_without_transforms_the_random_arrivals_are_the_replay_s(write, capsys):
    """A Vidur trace's synthetic arrivals (and a Mooncake trace's spread) drawn from the replay's
    stream of the seed, not a generator of the summary's own: the summary is of what the replay sees."""
    from sim.replay import prepare_trace

    p = write("v.csv", "num_prefill_tokens,num_decode_tokens\n" + "".join(f"{10 + i},{2 + i}\n" for i in range(50)))
    expected = list(prepare_trace(str(p), seed=4, trace_options={"qps": 2}))
    assert main([str(p), "--seed", "4", "--opt", "qps=2"]) == 0
    out = capsys.readouterr().out
    span = expected[-1].arrival_s - expected[0].arrival_s
    assert f"span {span:,.1f} s, mean rate {(len(expected) - 1) / span:.3f} req/s" in out


def test_the_summary_shows_the_first_arrival_and_refuses_one_far_from_0_unless_rebase_is_said(write, capsys):
    # (arrivals in Unix epoch seconds: the summary said "span 3.0 s", and a replay idled 1.7e9 s before them)
    p = write("epoch.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,1700000000.0,10,5\n"
                           "b,1700000001.5,10,5\nc,1700000003,10,5\n")
    with pytest.raises(SystemExit) as info:
        main([str(p)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"error: {p}:2: field 'arrival_s': the first request arrives at 1,700,000,000.000 s, 19,676 days after time 0")
    assert main([str(p), "--opt", "rebase=false"]) == 0
    assert "span 3.0 s, mean rate 0.667 req/s, IAT CV 0.00, first arrival at 1,700,000,000.000 s" in capsys.readouterr().out
    assert main([str(p), "--opt", "rebase=true"]) == 0
    assert "first arrival at 0.000 s" in capsys.readouterr().out
    assert main([str(p), "--limit", "1", "--opt", "rebase=true"]) == 0
    assert "one request, arriving at 0.000 s" in capsys.readouterr().out


def test_a_slow_trace_shows_its_rate_with_digits_and_one_request_is_singular(write, capsys):
    # (it printed "mean rate 0.000 req/s" for a request an hour, and "1 requests")
    p = write("slow.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,1,1\nb,3600,1,1\nc,7200,1,1\n")
    assert main([str(p)]) == 0
    assert "mean rate 0.000278 req/s" in capsys.readouterr().out
    p = write("one.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,1,1\n")
    assert main([str(p)]) == 0
    assert f"{p}: format canonical, 1 request, read in" in capsys.readouterr().out


def test_a_vidur_trace_takes_qps_and_arrival_as_sim_replay_does(write, capsys):
    # (it refused --qps and --arrival, which `controlplane sim replay` takes for a Vidur trace)
    p = write("v.csv", "num_prefill_tokens,num_decode_tokens\n" + "10,5\n" * 50)
    assert main([str(p), "--qps", "2", "--arrival", "gamma"]) == 0
    by_options = capsys.readouterr().out.splitlines()[1]
    assert main([str(p), "--opt", "qps=2", "--opt", "arrival=gamma"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == by_options  # (the same arrivals as --opt gives)
    assert main([str(p)]) == 0
    assert capsys.readouterr().out.splitlines()[1] != by_options


@pytest.mark.parametrize(("args", "message"), [
    (["--qps", "2"], "error: --qps and --arrival set the synthetic arrivals of Vidur traces (lengths only); {c} is in "
                     "the canonical format"),
    (["--qps", "2", "--opt", "qps=3"], "error: --opt qps and --qps are both given: give one"),
    (["--arrival", "uniform"], "error: --arrival: unknown arrival 'uniform'; valid choices: poisson, gamma"),
])
def test_qps_and_arrival_are_checked_as_sim_replay_checks_them(write, capsys, args, message):
    v = write("v.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n20,5\n")
    c = write("c.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\n")
    with pytest.raises(SystemExit) as exc:
        main([str(c if message.endswith("canonical format") else v), *args])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith(message.replace("{c}", str(c)))


def test_every_option_is_described_with_its_default(capsys, monkeypatch):
    """Its twelve transform options had no help at all (`python -m sim.traces --help`)."""
    import argparse

    parsers: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *a, **kw: parsers.append(self) or real(self, *a, **kw))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--max-output-tokens" in capsys.readouterr().out
    undescribed = [a.option_strings[-1] for a in parsers[0]._actions
                   if a.option_strings and not isinstance(a, argparse._HelpAction)
                   and (not a.help or (a.nargs != 0 and a.default is None and a.option_strings[-1] != "--opt"
                                       and "default" not in a.help))]
    assert undescribed == []
