"""`controlplane sim replay` and the library's `sim.replay.replay` give the same run for the same arguments (the
CLI's default run config, `sim/data/default_replay.yaml`, passed to the library by path)."""

from __future__ import annotations

import io
import json
import os

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.config import load_config
from controlplane.storage import export_rows, get_run, make_engine
from sim.replay import TraceTransforms, replay
from sim.traces import bundled_trace_path, read_trace
from sim.traces.bundled import bundled_default_config_path

CONFIG = bundled_default_config_path()  # what the CLI uses without --config

VOLATILE = {"run_id", "wall_s", "started_at", "finished_at", "status"}  # (status: the CLI's JSON's alone)


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch):
    for key in list(os.environ):
        if key.startswith("CONTROLPLANE_"):
            monkeypatch.delenv(key)


def cli_summary(*args: object) -> dict:
    result = CliRunner().invoke(app, ["sim", "replay", "--json", *(str(a) for a in args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def exported(url: str, run_id: int, what: str = "requests") -> str:
    buf = io.StringIO(newline="")
    export_rows(make_engine(url), run_id, what, "csv", buf)
    return buf.getvalue()


def test_cli_and_library_give_the_same_run_for_the_same_transforms_and_seed(tmp_path):
    trace = bundled_trace_path()
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(trace, "--format", "azure", "--seed", 7, "--window-start", 60, "--speed-up", 2,
                        "--rate-scale", 1.5, "--limit", 500, "--db", cli_db)
    result = replay(read_trace(trace, "azure"), load_config(CONFIG, {"seed": 7, "storage": {"url": lib_db}}),
                    transforms=TraceTransforms(window_start_s=60, speed_up=2, rate_scale=1.5, limit=500))
    assert s_cli["num_requests"] == 500
    assert any(".r" in line.split(",")[0] for line in exported(lib_db, 1).splitlines())  # rate scaling copied some
    assert s_cli.pop("status") == "finished"  # (the CLI's JSON says how the run ended, for a gate to read)
    assert stable(result.summary) == stable(s_cli)
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    a, b = get_run(make_engine(cli_db), s_cli["run_id"]), get_run(make_engine(lib_db), result.run_id)
    assert (a["trace"], a["trace_format"], a["seed"]) == (b["trace"], b["trace_format"], b["seed"]) == (
        str(trace), "azure", 7)


def test_a_synthetic_arrival_trace_is_read_with_the_runs_seed_in_both(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{100 + 37 * i % 900},{5 + i % 40}\n"
                                                                       for i in range(300)))
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(path, "--format", "vidur", "--qps", 3, "--arrival", "gamma", "--seed", 4, "--rate-scale", 0.7,
                        "--db", cli_db)
    result = replay(path, load_config(CONFIG, {"seed": 4, "storage": {"url": lib_db}}), trace_format="vidur",
                    trace_options={"qps": 3, "arrival": "gamma"}, transforms=TraceTransforms(rate_scale=0.7))
    assert stable(result.summary) == stable(s_cli) and result.trace_format == "vidur"
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    other = replay(path, load_config(CONFIG, {"seed": 5}), record=False, trace_format="vidur",
                   trace_options={"qps": 3, "arrival": "gamma"}, transforms=TraceTransforms(rate_scale=0.7))
    assert other.summary["num_requests"] != s_cli["num_requests"] or stable(other.summary) != stable(s_cli)


def request_ids(url: str, run_id: int) -> list[str]:
    return sorted(line.split(",")[0] for line in exported(url, run_id).splitlines()[1:])


def test_the_transforms_seed_replaces_the_runs_seed_for_the_trace_only(tmp_path):
    trace = bundled_trace_path()
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(trace, "--seed", 3, "--rate-scale", 0.5, "--limit", 200, "--db", cli_db)
    # Run seed 9, trace seed 3: the requests of the CLI's seed-3 run; trace seed 9: others.
    same = replay(trace, load_config(CONFIG, {"seed": 9, "storage": {"url": lib_db}}), trace_format="azure",
                  transforms=TraceTransforms(rate_scale=0.5, limit=200, seed=3))
    other = replay(trace, load_config(CONFIG, {"seed": 9, "storage": {"url": lib_db}}), trace_format="azure",
                   transforms=TraceTransforms(rate_scale=0.5, limit=200))
    assert request_ids(lib_db, same.run_id) == request_ids(cli_db, s_cli["run_id"])
    assert request_ids(lib_db, other.run_id) != request_ids(cli_db, s_cli["run_id"])


def test_bad_transforms_fail_before_a_run_is_stored(tmp_path):
    from controlplane.storage import list_runs

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "replay", "--speed-up", "0", "--db", url])
    # The command line names the option typed, the library the keyword given.
    assert result.exit_code == 2 and "error: --speed-up must be a finite number > 0, got 0\n" in result.output
    for options, message in ((["--window-start", "10", "--window-end", "2.5"],
                              "--window-end (2.5) must be greater than --window-start (10)"),
                             (["--rate-scale", "-1"], "--rate-scale must be a finite number > 0, got -1"),
                             (["--prompt-scale", "0"], "--prompt-scale must be a finite number > 0, got 0"),
                             (["--output-scale", "-0.5"], "--output-scale must be a finite number > 0, got -0.5"),
                             (["--prompt-scale", "nan"], "--prompt-scale must be a finite number > 0, got nan"),
                             (["--output-scale", "inf"], "--output-scale must be a finite number > 0, got inf")):
        result = CliRunner().invoke(app, ["sim", "replay", *options, "--db", url])
        assert result.exit_code == 2 and f"error: {message}\n" in result.output, result.output
    result = CliRunner().invoke(app, ["sim", "replay", "--limit", "-3", "--db", url])  # (at least 1, as runs list's)
    assert result.exit_code == 2 and "Invalid value for '--limit'" in result.output, result.output
    with pytest.raises(ValueError, match="^rate_scale must be a finite number > 0, got -1$"):
        replay(bundled_trace_path(), load_config(CONFIG, {"storage": {"url": url}}),
               transforms=TraceTransforms(rate_scale=-1))
    assert not (tmp_path / "runs.db").exists() or list_runs(make_engine(url)) == []


def test_repeat_plays_the_file_again_for_each_copy_in_the_cli_and_the_library(tmp_path):
    path = tmp_path / "lengths.csv"  # a synthetic-arrival trace: each copy is read with the same seed
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{100 + 37 * i % 900},{5 + i % 40}\n"
                                                                       for i in range(120)))
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(path, "--format", "vidur", "--qps", 2, "--seed", 3, "--repeat", 3, "--rate-scale", 1.5,
                        "--db", cli_db)
    transforms = TraceTransforms(repeat=3, rate_scale=1.5)
    result = replay(path, load_config(CONFIG, {"seed": 3, "storage": {"url": lib_db}}), trace_format="vidur",
                    trace_options={"qps": 2}, transforms=transforms)
    assert stable(result.summary) == stable(s_cli)
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    ids = request_ids(lib_db, result.run_id)
    once = replay(path, load_config(CONFIG, {"seed": 3}), record=False, trace_format="vidur",
                  trace_options={"qps": 2}).summary
    assert once["num_requests"] == 120 and sum(i.endswith(".c2") for i in ids) >= 100  # the third copy, mostly unscaled
    assert len(set(ids)) == len(ids) == s_cli["num_requests"] > 2.5 * 120
    assert s_cli["sim_span_s"] > 2.9 * once["sim_span_s"]
    with pytest.raises(ValueError, match="can be read again"):  # a one-pass stream cannot be repeated
        replay(read_trace(bundled_trace_path(), "azure"), load_config(CONFIG, {}), record=False, transforms=transforms)


def test_a_rate_profile_gives_the_same_run_in_the_cli_and_the_library_and_the_run_shows_it(tmp_path):
    trace = bundled_trace_path()
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    # ten minutes played twice; the profile's seconds are the replay's: the first copy thinned, the second doubled
    s_cli = cli_summary(trace, "--seed", 4, "--window-end", 600, "--repeat", 2,
                        "--rate-profile", "0:0.5,599:0.5,601:2", "--db", cli_db)
    result = replay(trace, load_config(CONFIG, {"seed": 4, "storage": {"url": lib_db}}), trace_format="azure",
                    transforms=TraceTransforms(window_end_s=600, repeat=2, rate_profile=[(0, 0.5), (599, 0.5),
                                                                                         (601, 2)]))
    assert stable(result.summary) == stable(s_cli)
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    ids = request_ids(cli_db, s_cli["run_id"])
    first = sum(1 for r in read_trace(trace, "azure") if r.arrival_s < 600)
    assert sum(not i.endswith((".c1", ".c1.r1")) for i in ids) < 0.6 * first  # thinned
    assert sum(i.endswith(".c1.r1") for i in ids) > 0.95 * first  # (all but the copy's first second) doubled
    shown = CliRunner().invoke(app, ["runs", "show", str(s_cli["run_id"]), "--db", cli_db])
    assert shown.exit_code == 0 and shown.stdout.splitlines()[1] == (
        "trace read: window_end_s=600; repeat=2; rate_profile=0:0.5,599:0.5,601:2")


def test_shuffled_copies_give_the_same_run_in_the_cli_and_the_library_and_the_run_shows_them(tmp_path):
    trace = bundled_trace_path()
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(trace, "--seed", 2, "--window-end", 120, "--rate-scale", 2.5, "--copies", "shuffled",
                        "--db", cli_db)
    result = replay(trace, load_config(CONFIG, {"seed": 2, "storage": {"url": lib_db}}), trace_format="azure",
                    transforms=TraceTransforms(window_end_s=120, rate_scale=2.5, copies="shuffled"))
    assert stable(result.summary) == stable(s_cli)
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    clumped_db = f"sqlite:///{tmp_path / 'clumped.db'}"
    clumped = replay(trace, load_config(CONFIG, {"seed": 2, "storage": {"url": clumped_db}}), trace_format="azure",
                     transforms=TraceTransforms(window_end_s=120, rate_scale=2.5))
    # the same requests copied as many times (the same ids), in other arrival slots: other request rows
    assert request_ids(clumped_db, clumped.run_id) == request_ids(cli_db, s_cli["run_id"])
    assert exported(clumped_db, clumped.run_id) != exported(cli_db, s_cli["run_id"])
    shown = CliRunner().invoke(app, ["runs", "show", str(s_cli["run_id"]), "--db", cli_db])
    assert shown.exit_code == 0 and shown.stdout.splitlines()[1] == (
        "trace read: window_end_s=120; rate_scale=2.5; copies=shuffled")
    bad = CliRunner().invoke(app, ["sim", "replay", "--rate-scale", "2", "--copies", "spread", "--db", cli_db])
    assert bad.exit_code == 2 and "--copies must be 'clumped', 'shuffled' or 'shifted', got 'spread'" in bad.stderr


def test_length_scales_give_the_same_run_in_the_cli_and_the_library_scaled_before_the_caps_and_shown(tmp_path):
    import csv

    trace = bundled_trace_path()
    cli_db, lib_db = f"sqlite:///{tmp_path / 'cli.db'}", f"sqlite:///{tmp_path / 'lib.db'}"
    s_cli = cli_summary(trace, "--window-end", 120, "--prompt-scale", 0.125, "--output-scale", 1.8765,
                        "--max-output-tokens", 100, "--db", cli_db)
    result = replay(trace, load_config(CONFIG, {"storage": {"url": lib_db}}), trace_format="azure",
                    transforms=TraceTransforms(window_end_s=120, prompt_scale=0.125, output_scale=1.8765,
                                               max_output_tokens=100))
    assert stable(result.summary) == stable(s_cli)
    assert exported(lib_db, result.run_id) == exported(cli_db, s_cli["run_id"])
    rows = {r["request_id"]: r for r in csv.DictReader(io.StringIO(exported(cli_db, s_cli["run_id"])))}
    trace_rows = [r for r in read_trace(trace, "azure") if r.arrival_s < 120]
    assert len(rows) == len(trace_rows)
    for r in trace_rows:  # scaled, rounded, at least 1, then capped
        row = rows[r.request_id]
        assert int(row["prompt_tokens"]) == max(1, round(r.prompt_tokens / 8))
        assert int(row["output_tokens"]) == min(100, max(1, round(r.output_tokens * 1.8765)))
    assert any(r.output_tokens * 1.8765 > 100 for r in trace_rows)  # (the cap cut some scaled outputs)
    assert get_run(make_engine(cli_db), s_cli["run_id"])["config"]["trace_read"] == {
        "transforms": {"window_end_s": 120.0, "prompt_scale": 0.125, "output_scale": 1.8765, "max_output_tokens": 100}}
    shown = CliRunner().invoke(app, ["runs", "show", str(s_cli["run_id"]), "--db", cli_db])
    assert shown.exit_code == 0 and shown.stdout.splitlines()[1] == (  # every digit: the options to read it again
        "trace read: window_end_s=120; prompt_scale=0.125; output_scale=1.8765; max_output_tokens=100")


@pytest.mark.parametrize("command", [["sim", "replay"], ["live-replay"]])
def test_a_bad_rate_profile_is_one_line_naming_the_option_and_the_point(tmp_path, command):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, [*command, "--rate-profile", "0:1,14400:x", "--limit", "5", "--db", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == (  # (after a note on the default config, where one is used)
        "error: --rate-profile: point '14400:x': factor 'x' is not a number; give TIME_S:FACTOR points separated by "
        "commas, e.g. 0:1,14400:2")
    assert not (tmp_path / "runs.db").exists()
