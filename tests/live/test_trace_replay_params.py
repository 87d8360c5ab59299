"""`controlplane live-replay` serves each trace request as the trace and the simulator describe it:
with its generation ``params`` (temperature, seed, ...), and a prompt text as exactly the trace's
``prompt_tokens`` token ids, the text still the request's prompt (what the exact cache keys on)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from controlplane.cli import build_app
from controlplane.live.trace_replay import prompt_ids, submit_params, unsubmitted_params
from controlplane.testing import stored_rows
from sim.traces.canonical import read_canonical
from sim.traces.record import TraceRequest
from tests.live.test_trace_replay import _config


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _live(tmp_path, trace, *extra):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = CliRunner().invoke(build_app(), [
        "live-replay", str(trace), "--config", str(_config(tmp_path, url)), "--pool", "thread", "--cpu-threads", "1",
        "--no-progress", "--json", *extra])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    return summary, {r["request_id"]: r for r in stored_rows(url, summary["run_id"], "requests")}, res


def test_a_live_replay_submits_the_traces_params_so_sampled_requests_are_not_cached(tmp_path):
    # The params were dropped (every request greedy): s2 and s3 were exact hits of s1's answer sampled at 0.8,
    # s3 (0.5, seed 7) "same prompt and parameters"; the simulated replay of the trace had none of them.
    story = "tell me a story"
    trace = _jsonl(tmp_path / "samp.jsonl", [
        {"request_id": "s1", "arrival_s": 0.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0.8}},
        {"request_id": "s2", "arrival_s": 1.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0.8}},
        {"request_id": "s3", "arrival_s": 2.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0.5, "seed": 7}},
        {"request_id": "g1", "arrival_s": 3.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0, "top_k": -1, "stop": ["\n\n\n"]}},
        {"request_id": "g2", "arrival_s": 4.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0, "top_k": -1, "stop": ["\n\n\n"]}},  # the same as g1's: a hit
        {"request_id": "g3", "arrival_s": 5.0, "prompt_tokens": 20, "output_tokens": 4, "prompt": story,
         "params": {"temperature": 0, "top_p": 0.5}},  # greedy too, but other params: another answer
    ])
    summary, rows, res = _live(tmp_path, trace)
    assert summary["live_replay"]["rejected"] == [] and summary["live_replay"]["unsubmitted_params"] == {}
    assert {k: r["cache_hit"] for k, r in rows.items()} == {
        "s1": None, "s2": None, "s3": None, "g1": None, "g2": "exact", "g3": None}
    assert summary["cache_hits"] == 1 and "warning" not in res.stderr
    # the simulated replay of the same trace hits the same request
    from controlplane.testing import make_config
    from sim.replay import replay

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sim = replay(trace, make_config(storage={"url": url})).summary
    assert {r["request_id"]: r["cache_hit"] for r in stored_rows(url, sim["run_id"], "requests")} == {
        k: r["cache_hit"] for k, r in rows.items()}


def test_a_text_prompt_is_served_as_the_traces_token_count_and_saved_so(tmp_path):
    # A text prompt was served as its own tokenization (a 20-token request stored as 4 tokens) while
    # --save-trace wrote the trace's 20 and the simulator served 20.
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)  # far more than 7 tokens
    trace = _jsonl(tmp_path / "text.jsonl", [
        {"request_id": "short", "arrival_s": 0.0, "prompt_tokens": 20, "output_tokens": 2, "prompt": "hi there"},
        {"request_id": "long", "arrival_s": 0.1, "prompt_tokens": 7, "output_tokens": 2, "prompt": long_text},
        {"request_id": "none", "arrival_s": 0.2, "prompt_tokens": 9, "output_tokens": 2},
    ])
    served = tmp_path / "served.jsonl"
    summary, rows, _ = _live(tmp_path, trace, "--save-trace", str(served))
    assert summary["num_completed"] == 3
    assert {k: r["prompt_tokens"] for k, r in rows.items()} == {"short": 20, "long": 7, "none": 9}
    assert summary["prompt_tokens"] == 36
    back = {r.request_id: r for r in read_canonical(served)}
    assert {k: r.prompt_tokens for k, r in back.items()} == {"short": 20, "long": 7, "none": 9}
    assert back["long"].prompt == long_text  # the text stays the request's prompt


def test_params_a_live_replay_does_not_submit_are_named_once_before_the_run(tmp_path):
    trace = _jsonl(tmp_path / "p.jsonl", [
        {"request_id": "a", "arrival_s": 0.0, "prompt_tokens": 8, "output_tokens": 2,
         "params": {"frequency_penalty": 0.5, "ignore_eos": True}},  # ignore_eos true: what the replay does
        {"request_id": "b", "arrival_s": 0.1, "prompt_tokens": 8, "output_tokens": 2,
         "params": {"frequency_penalty": 0.5, "ignore_eos": False}},
        {"request_id": "c", "arrival_s": 0.2, "prompt_tokens": 8, "output_tokens": 2, "params": {"temperature": 0.0}},
    ])
    summary, rows, res = _live(tmp_path, trace)
    assert summary["live_replay"]["unsubmitted_params"] == {"frequency_penalty": 2, "ignore_eos": 1}
    assert summary["live_replay"]["rejected"] == []
    assert set(rows) == {"a", "b", "c"} and summary["num_completed"] == 3
    err = " ".join(res.stderr.split())
    assert err.count("warning: trace params not honoured") == 1
    assert "frequency_penalty (2 of 3 requests), ignore_eos (1 of 3 requests)" in err


def test_a_param_of_the_wrong_type_is_the_traces_error_before_anything_runs(tmp_path):
    """As the simulator reads it (`controlplane.generation_params`): the file, line and field, exit 2."""
    trace = _jsonl(tmp_path / "p.jsonl", [
        {"request_id": "a", "arrival_s": 0.0, "prompt_tokens": 8, "output_tokens": 2},
        {"request_id": "c", "arrival_s": 0.2, "prompt_tokens": 8, "output_tokens": 2, "params": {"temperature": "hot"}},
    ])
    res = CliRunner().invoke(build_app(), ["live-replay", str(trace), "--config", str(_config(tmp_path, "sqlite:///"
                             f"{tmp_path / 'runs.db'}")), "--pool", "thread", "--no-progress", "--json"])
    assert res.exit_code == 2, res.output
    assert f"{trace}:2: field 'params.temperature': must be a number, not 'hot'" in " ".join(res.output.split())


def test_submit_params_and_prompt_ids():
    assert submit_params((("n", 2), ("seed", 7), ("stop", ("x",)), ("temperature", 0.5), ("top_k", -1),
                          ("top_p", None))) == {"seed": 7, "stop": ("x",), "temperature": 0.5, "top_k": 0}
    for bad, message in ((("seed", 7.5), "params.seed must be an integer"), (("top_k", True), "params.top_k"),
                         (("stop", (1,)), "params.stop must be a string or a list of strings")):
        with pytest.raises(ValueError, match=message):
            submit_params([bad])
    reqs = [TraceRequest("a", 0.0, 4, 1, params=(("ignore_eos", True), ("logprobs", 3))),
            TraceRequest("b", 0.0, 4, 1, params=(("logprobs", None), ("temperature", 1.0)))]
    assert unsubmitted_params(reqs) == {"logprobs": 1}

    class Model:  # BOS 1, then one id per word
        def encode(self, text, special_tokens=True):
            return ([1] if special_tokens else []) + [10 + len(w) for w in text.split()]

    assert prompt_ids(Model(), "a bb ccc", 3) == [1, 11, 12]  # cut
    assert prompt_ids(Model(), "a bb", 8) == [1, 11, 12, 11, 12, 11, 12, 11]  # repeated, without the BOS
    assert prompt_ids(Model(), "", 3) == [1, 1, 1] and prompt_ids(Model(), "", 0) == []
