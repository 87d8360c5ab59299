"""`controlplane live-replay` and `controlplane.live.trace_replay`: a trace served by live workers
(tiny random-weight model, thread pool, one torch thread), its run stored with its iterations, the
requests as served written as a trace the simulator replays alike."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from controlplane.cli import build_app
from controlplane.live.trace_replay import as_served, replay_trace_live
from sim.traces.canonical import read_canonical, write_canonical
from sim.traces.record import TraceRequest

TINY = {"preset": "tiny-llama", "device": "cpu", "max_seq_len": 128}


def _config(tmp_path, url: str):
    path = tmp_path / "live.yaml"
    path.write_text(json.dumps({"storage": {"url": url}, "cluster": {"models": [
        {"name": "tiny", "replicas": 1, "worker": TINY}]}}))
    return path


def _trace(tmp_path, n: int = 5, prompt: int = 12, output: int = 3):
    path = tmp_path / "trace.csv"
    write_canonical([TraceRequest(f"t{i}", 0.08 * i, prompt + i, output) for i in range(n)], path)
    return path


def test_as_served_keeps_the_trace_ids_and_lengths_and_the_arrivals_the_core_stamped():
    a = TraceRequest("a", 2.0, 256, 48, hash_ids=(1, 2), hash_block_tokens=16)
    b = TraceRequest("b", 2.5, 40, 8, tenant="t1")
    got = as_served([(a, 10.30), (b, 10.84)])
    assert [r.request_id for r in got] == ["a", "b"]
    assert got[0].arrival_s == pytest.approx(2.0) and got[1].arrival_s == pytest.approx(2.54)  # shifted, not rebased
    assert (got[0].prompt_tokens, got[0].output_tokens) == (256, 48)
    assert got[0].hash_ids == () and got[0].hash_block_tokens is None  # the live prompts share no prefix
    assert got[1].tenant == "t1" and as_served([]) == []


def test_live_replay_serves_the_trace_stores_its_iterations_and_saves_it_as_served(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    served = tmp_path / "served.jsonl"
    res = CliRunner().invoke(build_app(), [
        "live-replay", str(_trace(tmp_path)), "--config", str(_config(tmp_path, url)), "--pool", "thread",
        "--cpu-threads", "1", "--max-output-tokens", "2", "--save-trace", str(served), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["num_requests"] == 5 and summary["num_completed"] == 5
    assert summary["live_replay"] == {"submitted": 5, "late_s": summary["live_replay"]["late_s"], "rejected": [],
                                      "unsubmitted_params": {}}
    assert summary["output_tokens"] == 5 * 2  # every request generated its capped output, end-of-sequence ignored
    engine = sa.create_engine(url)
    with engine.connect() as c:
        assert c.execute(sa.text("select count(*) from iteration where run_id = :r"),
                         {"r": summary["run_id"]}).scalar() > 0  # what `controlplane calibrate` reads
    engine.dispose()
    with engine.connect() as c:  # the run's requests keep the trace's ids
        ids = {row[0] for row in c.execute(sa.text("select request_id from request where run_id = :r"),
                                           {"r": summary["run_id"]})}
    engine.dispose()
    assert ids == {f"t{i}" for i in range(5)}
    back = list(read_canonical(served))
    assert [r.request_id for r in back] == [f"t{i}" for i in range(5)]
    assert [(r.prompt_tokens, r.output_tokens) for r in back] == [(12 + i, 2) for i in range(5)]
    assert back[0].arrival_s == 0.0 and all(b.arrival_s <= c.arrival_s for b, c in zip(back, back[1:]))
    # the simulator replays the requests as served; the same ids make `runs compare` pair them
    from controlplane.testing import make_config
    from sim.replay import replay

    sim_run = replay(served, make_config(storage={"url": url})).summary["run_id"]
    res = CliRunner().invoke(build_app(), ["runs", "compare", str(summary["run_id"]), str(sim_run), "--db", url])
    assert res.exit_code == 0, res.output
    assert "of one run a side, paired" in " ".join(res.output.split())  # (the same requests: paired)
    assert f"run {summary['run_id']} (live) vs run {sim_run} (sim)" in res.output  # which side is which


def test_live_replay_says_how_many_requests_its_length_caps_reached(tmp_path):
    """A long-context trace capped for a small model becomes requests of one length (Mooncake at 256
    tokens: every prompt); the run's first lines say so."""
    from controlplane.cli.live_replay import at_the_caps

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = CliRunner().invoke(build_app(), [  # prompts 12..16 tokens, outputs 3
        "live-replay", str(_trace(tmp_path)), "--config", str(_config(tmp_path, url)), "--pool", "thread",
        "--cpu-threads", "1", "--max-prompt-tokens", "14", "--max-output-tokens", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "length caps: 3 of 5 prompts at --max-prompt-tokens 14, 5 of 5 outputs at --max-output-tokens 2" in text
    quiet = CliRunner().invoke(build_app(), [  # --json: the JSON alone on stdout, the note still on stderr
        "live-replay", str(_trace(tmp_path)), "--config", str(_config(tmp_path, url)), "--pool", "thread",
        "--cpu-threads", "1", "--max-prompt-tokens", "14", "--no-progress", "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["num_requests"] == 5
    assert "length caps: 3 of 5 prompts at --max-prompt-tokens 14" in " ".join(quiet.stderr.split())
    assert at_the_caps([TraceRequest("a", 0.0, 300, 5)], None, None) == ""  # no cap, no line
    assert at_the_caps([TraceRequest("a", 0.0, 300, 5)], None, 48) == ("length caps: 0 of 1 outputs at "
                                                                       "--max-output-tokens 48 (cut there, or "
                                                                       "exactly that long; `sim replay` with the "
                                                                       "same caps serves the same lengths)")


def test_a_trace_that_does_not_fit_the_model_is_refused_before_any_worker_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = CliRunner().invoke(build_app(), [
        "live-replay", str(_trace(tmp_path, prompt=120, output=30)), "--config", str(_config(tmp_path, url)),
        "--pool", "thread"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "5 of 5 requests" in text and "the context, 128" in text and "--max-prompt-tokens" in text
    assert not (tmp_path / "runs.db").exists()  # no run was started


def test_a_request_the_model_refuses_is_reported_not_dropped(tmp_path):
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config

    cfg = make_config(storage={"url": f"sqlite:///{tmp_path / 'runs.db'}"},
                      cluster={"models": [{"name": "tiny", "replicas": 1, "worker": TINY}]})
    reqs = [TraceRequest("ok", 0.0, 10, 2), TraceRequest("long", 0.01, 500, 2)]  # past the 128-token context

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            return await replay_trace_live(driver, reqs, seed=cfg.seed)
        finally:
            await driver.close()

    got = asyncio.run(main())
    assert got.submitted == 1 and [r.request_id for r in got.served] == ["ok"]
    assert [r.request_id for r in got.rejected] == ["long"] and "too long" in got.rejected[0].reason


def _requests_recorded(path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
            return c.execute("select count(*) from request").fetchone()[0]
    except sqlite3.Error:  # no file or no table yet
        return 0


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stores_the_run_as_interrupted_and_says_so(tmp_path, stop):
    """SIGTERM (`kill`, `timeout`, a container runtime) did what SIGKILL does: exit 143 without a word, the run left
    `running`, then marked crashed. It now closes the run as Ctrl-C does, even where SIGINT is ignored."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = tmp_path / "slow.csv"
    write_canonical([TraceRequest(f"t{i}", 1.0 * i, 8, 2) for i in range(60)], trace)  # a minute of requests
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "live-replay", str(trace), "--config", str(_config(tmp_path, url)),
         "--pool", "thread", "--cpu-threads", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,  # (SIGINT as a background job has it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if stop == "SIGINT" else signal.SIG_IGN))
    try:
        assert "live replay:" in proc.stdout.readline()
        deadline = time.monotonic() + 120
        while _requests_recorded(tmp_path / "runs.db") < 3:  # the workers are up and serving
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.5)
        proc.send_signal(signal.Signals[stop])
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.Signals[stop], out
    assert "is stored with status 'interrupted'" in " ".join(out.split()), out
    assert "(`controlplane runs show 1 --db sqlite:///" in " ".join(out.split()), out  # (not in the default database)
    engine = sa.create_engine(url)
    with engine.connect() as c:
        status, summary = c.execute(sa.text("select status, summary from run")).one()
        served = c.execute(sa.text("select count(*) from request")).scalar()
    engine.dispose()
    assert status == "interrupted" and 0 < served < 60, out
    assert json.loads(summary)["interrupted_by"] == stop and "resource_tracker" not in out, out


def test_a_trace_with_a_repeated_request_id_is_refused_before_any_worker_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = tmp_path / "dup.csv"
    write_canonical([TraceRequest("x", 0.0, 8, 2), TraceRequest("x", 0.1, 8, 2)], trace)
    res = CliRunner().invoke(build_app(), ["live-replay", str(trace), "--config", str(_config(tmp_path, url))])
    assert res.exit_code == 2, res.output
    assert "dup.csv:3: field 'request_id': duplicate request id 'x'" in " ".join(res.output.split())
    assert not (tmp_path / "runs.db").exists()


def test_trace_format_options_choose_the_requests_before_any_worker_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = tmp_path / "small_burstgpt.csv"  # BurstGPT's layout: 2 of its 4 rows GPT-4, 1 of them failed
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "0,GPT-4,200,5,205,API log\n1,ChatGPT,200,5,205,API log\n"
                     "2,GPT-4,200,0,200,API log\n3,ChatGPT,200,5,205,API log\n")
    res = CliRunner().invoke(build_app(), [
        "live-replay", str(trace), "--format", "burstgpt", "--opt", "models=GPT-4", "--opt", "failed=drop",
        "--config", str(_config(tmp_path, url)), "--pool", "thread"])
    assert res.exit_code == 2  # (too long for the tiny model: refused, and counted after the options)
    assert "1 of 1 requests" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "runs.db").exists()


def test_a_rate_profile_chooses_the_requests_before_any_worker_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = CliRunner().invoke(build_app(), [  # 5 requests doubled: 10, each too long for the tiny model
        "live-replay", str(_trace(tmp_path, prompt=200)), "--rate-profile", "0:2", "--config",
        str(_config(tmp_path, url)), "--pool", "thread"])
    assert res.exit_code == 2
    assert "10 of 10 requests" in " ".join(res.output.split()) and "t0.r1" not in res.output, res.output
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize("options, message", [
    (["--pool", "threads"], "unknown pool 'threads'; choose one of thread, process, ray"),
    (["--save-trace", "/proc/nope/out.csv"], "--save-trace: /proc/nope is not a folder"),
    (["--save-trace", "{db}"], "--save-trace {db}: that is the SQLite database {db}, which this command uses"),
    (["--save-trace", "{db}-wal"], "--save-trace {db}-wal: that is the wal file of the SQLite database {db}"),
    (["--save-trace", "{dir}/served.jsonl.zst"], "--save-trace: {dir}/served.jsonl.zst: write_canonical does not "
                                                 "write .zst files"),
])
def test_a_bad_pool_or_save_trace_folder_is_refused_before_the_run(tmp_path, options, message):
    """The pool was refused after the banner had said the run was recorded; a --save-trace folder that does not
    exist was found out after the whole real-time run, and its error replaced the summary; a --save-trace naming
    the run's database replaced it with the trace after the run."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    options = [o.format(db=tmp_path / "runs.db", dir=tmp_path) for o in options]
    res = CliRunner().invoke(build_app(), ["live-replay", str(_trace(tmp_path)), *options,
                                           "--config", str(_config(tmp_path, url))])
    message = message.format(db=tmp_path / "runs.db", dir=tmp_path)
    assert res.exit_code == 2 and f"error: {message}" in " ".join(res.output.split()), res.output
    assert "run recorded in" not in res.output and not (tmp_path / "runs.db").exists()


def test_a_bad_transform_names_its_option_before_any_worker_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for options, message in ((["--speed-up", "-2"], "--speed-up must be a finite number > 0, got -2"),
                             (["--window-start", "4", "--window-end", "1.5"],
                              "--window-end (1.5) must be greater than --window-start (4)"),
                             (["--prompt-scale", "0"], "--prompt-scale must be a finite number > 0, got 0"),
                             (["--output-scale", "nan"], "--output-scale must be a finite number > 0, got nan")):
        res = CliRunner().invoke(build_app(), ["live-replay", str(_trace(tmp_path)), *options,
                                               "--config", str(_config(tmp_path, url))])
        assert res.exit_code == 2 and f"error: {message}" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "runs.db").exists()


def test_a_live_run_says_how_its_trace_was_read_as_a_simulated_one_does(tmp_path, monkeypatch):
    """The transforms and format options go into the run's config (``trace_read``), the rows the options
    left out into its summary (``trace_rows_left_out``), through `sim.replay`'s functions: `runs show`
    prints them in one line. A trace named relative to the working folder is stored by its absolute path."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    trace = tmp_path / "small_burstgpt.csv"  # BurstGPT's layout: 3 GPT-4 rows (1 failed), 1 ChatGPT row
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                     "0,GPT-4,10,3,13,API log\n0.2,ChatGPT,10,3,13,API log\n"
                     "0.4,GPT-4,12,0,12,API log\n0.6,GPT-4,11,4,15,API log\n")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(build_app(), [
        "live-replay", trace.name, "--format", "burstgpt", "--opt", "models=GPT-4", "--opt", "failed=drop",
        "--speed-up", "2", "--prompt-scale", "0.5", "--max-output-tokens", "2", "--config", str(_config(tmp_path, url)), "--pool", "thread",
        "--cpu-threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["num_completed"] == 2 and summary["trace_rows_left_out"] == {"models": 1, "failed": 1}
    engine = sa.create_engine(url)
    with engine.connect() as c:
        config, stored, path, fmt = c.execute(sa.text("select config, summary, trace, trace_format from run "
                                                      "where id = :r"), {"r": summary["run_id"]}).one()
    engine.dispose()
    assert (path, fmt) == (str(trace), "burstgpt")  # the run row names its trace, as a simulated run's does
    config, stored = (json.loads(x) if isinstance(x, str) else x for x in (config, stored))
    assert config["trace_read"] == {"transforms": {"speed_up": 2.0, "prompt_scale": 0.5, "max_output_tokens": 2},
                                    "options": {"models": "GPT-4", "failed": "drop"}}
    assert stored["trace_rows_left_out"] == {"models": 1, "failed": 1}
    shown = CliRunner().invoke(build_app(), ["runs", "show", str(summary["run_id"]), "--db", url])
    assert shown.exit_code == 0, shown.output
    assert ("trace read: speed_up=2; prompt_scale=0.5; max_output_tokens=2; models=GPT-4; failed=drop; rows left out: models 1, "
            "failed 1") in shown.stdout.splitlines()


def test_a_slow_hook_of_a_live_replay_is_warned_of_as_the_daemons_are(tmp_path, monkeypatch, caplog):
    """live-replay runs hooks on its event loop as the daemon does, but timed none: a cp_admit_request sleeping
    0.3 s stalled the run without a word."""
    import time

    from controlplane import Plugin, hook_calls, hookimpl
    from controlplane.live.daemon import SLOW_HOOK_S
    from controlplane.live.trace_replay import run_trace_live
    from controlplane.testing import make_config

    class SlowAdmission(Plugin):
        name = "slow-admission"

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        @hookimpl
        def cp_admit_request(self, ctx, request):
            self.calls += 1
            if self.calls == 1:
                time.sleep(3 * SLOW_HOOK_S)

    monkeypatch.setattr(hook_calls, "_warned_slow", set())
    cfg = make_config(storage={"url": f"sqlite:///{tmp_path / 'runs.db'}"},
                      cluster={"models": [{"name": "tiny", "replicas": 1, "worker": TINY}]})
    with caplog.at_level("WARNING", logger="controlplane.plugin_manager"):
        res = run_trace_live(cfg, [TraceRequest(f"t{i}", 0.02 * i, 8, 2) for i in range(3)], pool="thread",
                             cpu_threads=1, extra_plugins=[SlowAdmission()])
    assert res.summary["num_completed"] == 3
    warned = [r.getMessage() for r in caplog.records if "'slow-admission'" in r.getMessage()]
    assert len(warned) == 1 and "one call of cp_admit_request took" in warned[0]
    assert "live-replay" in warned[0] and "event loop" in warned[0]
    assert hook_calls._slow_hook_s is None  # a simulated replay after it in this process times nothing
