"""`sim.replay.replay`, the library entry point: latency models, recording, trace errors."""

from __future__ import annotations

import re

import pytest

from controlplane.config import DEFAULT_PLUGINS
from controlplane.errors import ConfigError
from controlplane.storage import get_run, list_runs, make_engine
from controlplane.testing import make_config, make_trace
from sim.replay import ReplayInterrupted, TraceTransforms, build_latency_models, prepare_trace, replay
from sim.traces import TraceFormatError, TraceRequest, bundled_trace_path, read_trace
from tests.fixtures.common import FinishedLog, azure_head


def test_replay_without_recording_returns_the_summary_and_session():
    summary, session = replay(make_trace(30), make_config(), record=False)
    assert summary["run_id"] is None and session.run_id is None and session.engine is None
    assert summary["num_requests"] == summary["num_completed"] == 30
    assert summary["wall_s"] >= 0 and summary["sim_end_s"] > 0
    assert session.core.num_active == 0


def test_recorded_replays_get_consecutive_run_ids(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = make_config(storage={"url": url}, name="first")
    a, _ = replay(make_trace(10), config, trace_name="synthetic", trace_format="canonical")
    b, _ = replay(make_trace(10), make_config(storage={"url": url}))
    assert (a["run_id"], b["run_id"]) == (1, 2)
    engine = make_engine(url)
    run = get_run(engine, 1)
    assert (run["name"], run["trace"], run["trace_format"], run["status"]) == ("first", "synthetic", "canonical",
                                                                               "finished")
    assert run["summary"]["num_requests"] == 10 and run["sim_end_s"] == pytest.approx(a["sim_end_s"])
    assert [r["id"] for r in list_runs(engine)] == [2, 1]


def test_an_unknown_latency_model_names_the_key_and_the_registered_ones():
    config = make_config(cluster={"models": [{"name": "default", "latency_model": "quantum"}]})
    with pytest.raises(ConfigError) as exc:
        replay(make_trace(2), config, record=False)
    msg = str(exc.value)
    assert "cluster.models[default].latency_model" in msg and "'quantum'" in msg
    assert "linear" in msg and "vidur" in msg


def test_bad_latency_settings_name_the_key():
    config = make_config(cluster={"models": [{"name": "default", "latency": {"base_s": -1.0}}]})
    with pytest.raises(ConfigError, match=r"cluster\.models\[default\]\.latency: base_s must be"):
        replay(make_trace(2), config, record=False)
    config = make_config(cluster={"models": [{"name": "default", "latency": {"bogus": 1}}]})
    with pytest.raises(ConfigError, match=r"cluster\.models\[default\]\.latency"):
        replay(make_trace(2), config, record=False)
    # a function factory's wrong or missing key in plain words (it was "_measured() got an unexpected keyword")
    for latency, words in (({"pth": "p.json"}, "does not take ['pth']; valid settings: ['path']"),
                           ({}, "needs ['path']; valid settings: ['path']")):
        config = make_config(cluster={"models": [{"name": "tiny", "latency_model": "measured", "latency": latency}]})
        with pytest.raises(ConfigError, match=re.escape(f"cluster.models[tiny].latency: latency model 'measured' "
                                                        f"{words}")):
            replay(make_trace(2), config, record=False)


def test_a_library_replay_refuses_a_latency_models_default_tensor_parallel_other_than_the_replicas_gpus():
    # vidur's Llama-2-7b default is tensor_parallel 2: a 1-GPU replica would be timed on 2 GPUs and billed for 1
    # (the CLI refused it; the library and sweeps, which build latency models here, ran it)
    latency = {"model": "meta-llama/Llama-2-7b-hf", "gpu": "a100", "attention": "scaled"}
    config = make_config(cluster={"models": [{"name": "default", "latency_model": "vidur", "latency": latency}]})
    with pytest.raises(ConfigError, match=re.escape("cluster.models[default]: the default tensor_parallel of latency "
                                                    "model 'vidur' (2) and gpus_per_replica (1) disagree")):
        replay(make_trace(2), config, record=False)
    config = make_config(cluster={"models": [{"name": "default", "latency_model": "vidur", "latency": latency,
                                              "gpus_per_replica": 2}]})
    assert replay(make_trace(2), config, record=False).summary["num_completed"] == 2


def test_a_measured_profile_that_is_not_there_names_the_key_the_file_and_where_it_was_looked_for(
        tmp_path, monkeypatch):
    """It said only 'profile.json: No such file or directory' (a sim.yaml replayed from another directory)."""
    monkeypatch.chdir(tmp_path)
    config = make_config(cluster={"models": [{"name": "tiny", "latency_model": "measured",
                                              "latency": {"path": "profile.json"}}]})
    with pytest.raises(ConfigError) as info:
        replay(make_trace(2), config, record=False)
    text = str(info.value)
    assert text.startswith("cluster.models[tiny].latency: cannot read profile.json: No such file or directory")
    assert f"read from the current directory, {tmp_path}, not the config file's folder" in text
    absolute = tmp_path / "gone.json"
    config = make_config(cluster={"models": [{"name": "tiny", "latency_model": "measured",
                                              "latency": {"path": str(absolute)}}]})
    with pytest.raises(ConfigError, match=r"cannot read .*gone\.json: No such file or directory$"):
        replay(make_trace(2), config, record=False)


def test_a_run_on_a_measured_profile_stores_the_files_sha256(tmp_path, monkeypatch):
    """Which frozen profile a run was simulated on is in its row (`controlplane calibrate` prints the hash)."""
    import hashlib

    from tests.sim.latency.test_other_models import _rows
    from sim.latency.measured import write_profile

    monkeypatch.chdir(tmp_path)
    path = write_profile(tmp_path / "profile.json", _rows(), {"model": "m", "device": "d"})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    config = make_config(storage={"url": db}, cluster={"models": [
        {"name": "tiny", "latency_model": "measured", "latency": {"path": "profile.json"}}]})
    result = replay(make_trace(5), config)  # (no model named: the first deployment)
    stored = get_run(make_engine(db), result.run_id)["config"]["latency_files"]
    fit = stored["tiny"].pop("fit")  # (the profile's fit error on its rows beside its hash: `runs show` prints it)
    assert stored == {"tiny": {"path": "profile.json", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
    assert set(fit) == {"rows", "median_rel_err", "p90_rel_err", "max_rel_err"} and fit["rows"] == len(_rows())
    plain = replay(make_trace(5), make_config(storage={"url": db}))
    assert "latency_files" not in get_run(make_engine(db), plain.run_id)["config"]
    from typer.testing import CliRunner

    from controlplane.cli import app

    shown = CliRunner().invoke(app, ["runs", "show", str(result.run_id), "--db", db]).stdout
    assert f"latency profile of tiny: profile.json sha256 {stored['tiny']['sha256']}" in shown


def test_without_the_latency_model_plugin_the_error_says_so():
    enabled = [n for n in DEFAULT_PLUGINS if n != "builtin-latency-models"]
    with pytest.raises(ConfigError, match="is builtin-latency-models enabled"):
        replay(make_trace(2), make_config(plugins={"enabled": enabled}), record=False)


def test_an_allow_list_without_the_latency_model_plugin_is_named(monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_LOAD_PLUGINS", "least-loaded, continuous-batching, fixed-replicas")
    with pytest.raises(ConfigError, match=r"\$CONTROLPLANE_LOAD_PLUGINS='least-loaded, continuous-batching, "
                                          r"fixed-replicas' leaves builtin-latency-models out"):
        replay(make_trace(2), make_config(), record=False)


def test_a_registered_factory_that_returns_no_latency_model_is_a_config_error_naming_the_deployment():
    from controlplane import Plugin, hookimpl

    class Seconds(Plugin):  # a factory returning a number (a fixed iteration time), not a LatencyModel
        name = "seconds-latency"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("fixed", lambda **settings: 0.02)

    config = make_config(cluster={"models": [{"name": "default", "latency_model": "fixed"}]})
    with pytest.raises(ConfigError, match=r"cluster\.models\[default\]\.latency_model: the factory registered as "
                                          r"'fixed' returned float, not a LatencyModel"):
        replay(make_trace(2), config, record=False, extra_plugins=[Seconds()])


def test_each_deployment_gets_its_own_latency_model():
    from controlplane.session import RunSession

    config = make_config(cluster={"models": [
        {"name": "small", "latency": {"base_s": 0.001}},
        {"name": "big", "latency": {"base_s": 0.05}},
    ]})
    models = build_latency_models(RunSession(config, mode="sim", record=False))
    assert set(models) == {"small", "big"} and models["small"] is not models["big"]


def test_a_profile_fitted_latency_model_replays_azure_rows():
    config = make_config(cluster={"models": [{"name": "default", "replicas": 2, "latency_model": "splitwise",
                                              "gpus_per_replica": 2}]})
    log = FinishedLog()
    summary, _ = replay(azure_head(300), config, record=False, extra_plugins=[log])
    assert summary["num_completed"] == 300
    linear, _ = replay(azure_head(300), make_config(), record=False)
    assert summary["ttft_p50_s"] != linear["ttft_p50_s"]  # a different model, different timings


def test_a_malformed_trace_row_raises_its_trace_error(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n"
                    "a,0.0,10,2\nb,0.5,10,2\nc,1.0,ten,2\nd,1.5,10,2\n")
    with pytest.raises(TraceFormatError) as exc:
        replay(read_trace(path, "canonical"), make_config(), record=False)
    assert (exc.value.path, exc.value.line, exc.value.field) == (str(path), 4, "prompt_tokens")


def test_ctrl_c_during_a_replay_names_the_interrupted_run_and_what_had_arrived(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    def interrupt(arrived: int, sim_s: float) -> None:  # (reported every 256 arrivals and each simulated minute)
        if arrived >= 256:
            raise KeyboardInterrupt

    with pytest.raises(ReplayInterrupted) as exc:
        replay(make_trace(600), make_config(storage={"url": url}), on_progress=interrupt)
    assert isinstance(exc.value, KeyboardInterrupt)
    assert (exc.value.run_id, exc.value.num_arrived) == (1, 256)
    assert exc.value.db_url == url  # (the command's hint names it)
    run = get_run(make_engine(url), 1)
    assert run["status"] == "interrupted" and run["summary"]["error"].startswith("KeyboardInterrupt")


def test_a_first_ctrl_c_stops_the_replay_at_its_next_tick_with_a_whole_summary(tmp_path):
    """SIGINT (Ctrl-C) ends the run as --until does: the requests in flight recorded as such, the summary
    whole (it was ``{"error": "KeyboardInterrupt"}`` and in-flight requests had no row); a second one
    interrupts at once."""
    import os
    import signal

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sent = []

    def ctrl_c(arrived: int, sim_s: float) -> None:
        if not sent:
            sent.append(sim_s)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(ReplayInterrupted) as exc:
        replay(make_trace(2000, qps=20), make_config(storage={"url": url}), on_progress=ctrl_c)
    summary = exc.value.summary
    assert exc.value.run_id == 1 and summary["run_id"] == 1 and exc.value.num_arrived == summary["num_requests"]
    assert sent[0] <= summary["interrupted_at_s"] <= sent[0] + 1.0  # (the next control tick)
    assert summary["num_requests"] < 2000 and summary["num_in_flight"] > 0
    engine = make_engine(url)
    run = get_run(engine, 1)
    assert run["status"] == "interrupted" and run["summary"]["num_in_flight"] == summary["num_in_flight"]
    rows = _export(url, 1, "requests").splitlines()[1:]
    assert len(rows) == summary["num_requests"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (the replay's handler is gone)

    def twice(arrived: int, sim_s: float) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(ReplayInterrupted) as exc:
        replay(make_trace(2000, qps=20), make_config(storage={"url": url}), on_progress=twice)
    assert get_run(engine, 2)["status"] == "interrupted"
    # at once, mid-event, and still no request lost: those in the system are stored as in flight (they had no row)
    stored = get_run(engine, 2)["summary"]
    assert stored["interrupted_mid_event"] and stored["error"].startswith("KeyboardInterrupt")
    assert exc.value.summary == stored  # (what `sim replay` prints, --json too, as after one Ctrl-C)
    rows = _export(url, 2, "requests").splitlines()[1:]
    assert len(rows) == stored["num_requests"] == exc.value.num_arrived and stored["num_in_flight"] > 0
    assert sum(",in_flight," in row for row in rows) == stored["num_in_flight"]


def test_sigterm_stops_the_replay_at_its_next_tick_as_ctrl_c_does(tmp_path):
    """`timeout`, `kill`, a container runtime or a batch scheduler send SIGTERM: the replay ended at once, its run
    left 'running' (then marked crashed) with no summary; it now stops as at a first Ctrl-C, and says which."""
    import os
    import signal

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sent = []

    def term(arrived: int, sim_s: float) -> None:
        if not sent:
            sent.append(sim_s)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(ReplayInterrupted) as exc:
        replay(make_trace(2000, qps=20), make_config(storage={"url": url}), on_progress=term)
    summary = exc.value.summary
    assert summary["interrupted_by"] == "SIGTERM" and sent[0] <= summary["interrupted_at_s"] <= sent[0] + 1.0
    run = get_run(make_engine(url), 1)
    assert run["status"] == "interrupted" and run["summary"]["interrupted_by"] == "SIGTERM"
    assert len(_export(url, 1, "requests").splitlines()[1:]) == summary["num_requests"] < 2000
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (given back)


# --- the library workflow: transforms, seeds, determinism, what a benchmark reads ---------------


def _export(url: str, run_id: int, what: str) -> str:
    import io

    from controlplane.storage import export_rows

    buf = io.StringIO(newline="")
    export_rows(make_engine(url), run_id, what, "csv", buf)
    return buf.getvalue()


def test_two_replays_store_byte_for_byte_the_same_rows(tmp_path):
    from sim.replay import TraceTransforms

    transforms = TraceTransforms(window_start_s=30, rate_scale=1.4, limit=600)
    runs = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        result = replay(bundled_trace_path(), make_config(seed=11, storage={"url": url}), transforms=transforms)
        runs.append((url, result))
    (url_a, a), (url_b, b) = runs
    assert a.summary["num_requests"] == 600
    assert {k: v for k, v in a.summary.items() if k != "wall_s"} == {k: v for k, v in b.summary.items() if k != "wall_s"}
    for what in ("requests", "decisions", "metrics"):
        rows_a = _export(url_a, a.run_id, what)
        assert rows_a.count("\n") > 1 and rows_a == _export(url_b, b.run_id, what), what


def test_the_result_unpacks_as_summary_and_session_and_carries_the_drivers_counters():
    result = replay(make_trace(40), make_config(), record=False)
    summary, session = result
    assert summary is result.summary and session is result.session and result.run_id is None
    assert result.num_events >= 40 and result.num_timers >= 40 and result.driver.num_arrived == 40
    assert 0 < result.loop_s <= summary["wall_s"] + 1e-3
    assert result.trace_format is None


def test_a_trace_file_is_read_by_the_library_and_named_in_the_run(tmp_path):
    from sim.replay import TraceTransforms

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = replay(bundled_trace_path(), make_config(storage={"url": url}), transforms=TraceTransforms(limit=50))
    assert result.trace_format == "azure" and result.summary["num_requests"] == 50
    run = get_run(make_engine(url), result.run_id)
    assert (run["trace"], run["trace_format"]) == (str(bundled_trace_path()), "azure")


def test_a_trace_named_relatively_is_stored_where_it_is_not_as_typed(tmp_path, monkeypatch):
    # (stored as typed, "az trace.csv": `runs show` from another folder lost where the run's trace was)
    folder = tmp_path / "proj dir"
    folder.mkdir()
    (folder / "az trace.csv").write_text("".join(bundled_trace_path().read_text().splitlines(True)[:21]))
    monkeypatch.chdir(folder)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    by_name = replay("az trace.csv", make_config(storage={"url": url}), transforms=TraceTransforms(limit=5))
    by_reader = replay(read_trace("./az trace.csv"), make_config(storage={"url": url}))
    engine = make_engine(url)
    for result in (by_name, by_reader):
        run = get_run(engine, result.run_id)
        assert (run["trace"], run["trace_format"]) == (str(folder / "az trace.csv"), "azure")


def test_reader_options_need_a_file_and_a_missing_file_is_named():
    with pytest.raises(ValueError, match="trace_options apply to a trace file"):
        replay(make_trace(2), make_config(), record=False, trace_options={"qps": 2})
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        replay("nope.csv", make_config(), record=False)


def test_a_folder_given_as_the_trace_is_named_as_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"trace {tmp_path} is a folder, not a file"):
        replay(tmp_path, make_config(), record=False)


def test_prepare_trace_is_what_a_replay_sees():
    from sim.replay import TraceTransforms, prepare_trace

    transforms = TraceTransforms(speed_up=3, rate_scale=2.5, limit=300)
    trace = list(prepare_trace(bundled_trace_path(), seed=5, transforms=transforms, trace_format="azure"))
    log = FinishedLog()
    result = replay(bundled_trace_path(), make_config(seed=5), record=False, extra_plugins=[log],
                    transforms=transforms)
    assert len(trace) == result.summary["num_requests"] == 300
    assert sorted(r.request_id for r in log.requests) == sorted(t.request_id for t in trace)
    again = replay(trace, make_config(seed=5), record=False)
    assert {k: v for k, v in again.summary.items() if k != "wall_s"} == {
        k: v for k, v in result.summary.items() if k != "wall_s"}


def test_replay_with_takes_the_same_transforms(tmp_path):
    from controlplane.testing import replay_with
    from sim.replay import TraceTransforms

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = replay_with(trace=bundled_trace_path(), db_url=url, transforms=TraceTransforms(speed_up=4, limit=120),
                         seed=2)
    library = replay(bundled_trace_path(), make_config(seed=2), record=False,
                     transforms=TraceTransforms(speed_up=4, limit=120))
    assert result.run_id == 1 and len(result.requests) == 120
    assert {k: v for k, v in result.summary.items() if k not in ("run_id", "wall_s")} == {
        k: v for k, v in library.summary.items() if k not in ("run_id", "wall_s")}


def test_replay_with_applies_the_database_and_overrides_on_top_of_a_given_config(tmp_path, monkeypatch):
    """They were ignored with a config: the run went to ./controlplane.db and ran the config's two replicas."""
    from controlplane.testing import make_trace, replay_with
    from controlplane.storage import make_engine
    from sqlalchemy import text

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    base = make_config(seed=3, sim={"tick_s": 0.5})
    result = replay_with(trace=make_trace(30, qps=20), config=base, db_url=url,
                         cluster={"models": [{"name": "default", "replicas": 5}]})
    assert len({r.worker_id for r in result.requests}) == 5
    assert not (tmp_path / "controlplane.db").exists()
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 30
        config = conn.execute(text("SELECT config FROM run")).scalar()
    engine.dispose()
    assert '"seed": 3' in config or "'seed': 3" in config or '"seed":3' in config


def test_a_rate_profile_is_checked_when_the_transforms_are_made_and_kept_as_float_pairs():
    from sim.replay import NO_TRANSFORMS, TraceTransforms

    t = TraceTransforms(rate_profile=[[0, 1], [14400, 2]])
    assert t.rate_profile == ((0.0, 1.0), (14400.0, 2.0)) and t == TraceTransforms(rate_profile=((0, 1), (14400, 2)))
    assert hash(t) == hash(TraceTransforms(rate_profile=((0.0, 1.0), (14400.0, 2.0))))
    assert TraceTransforms() == NO_TRANSFORMS and TraceTransforms().rate_profile is None
    with pytest.raises(ValueError, match=r"rate_profile point 1: its time, 5 s, must be later than the point before's \(10 s\)"):
        TraceTransforms(rate_profile=[(10, 1), (5, 2)])


def test_a_rate_profile_draws_from_the_transform_stream_as_rate_scale_does():
    from sim.replay import TRANSFORM_STREAM, TraceTransforms, prepare_trace, trace_rng
    from sim.traces import rate_profile

    points = [(0, 0.5), (1800, 2.0)]
    got = list(prepare_trace(bundled_trace_path(), seed=6, trace_format="azure",
                             transforms=TraceTransforms(rate_profile=points)))
    assert got == list(rate_profile(read_trace(bundled_trace_path(), "azure"), points, trace_rng(6, TRANSFORM_STREAM)))
    assert got != list(prepare_trace(bundled_trace_path(), seed=7, trace_format="azure",
                                     transforms=TraceTransforms(rate_profile=points)))
    # a flat profile is rate_scale, draw for draw; with both, the factor is their product
    flat = TraceTransforms(rate_profile=[(0, 1.5)], limit=500)
    assert list(prepare_trace(bundled_trace_path(), seed=6, trace_format="azure", transforms=flat)) == list(
        prepare_trace(bundled_trace_path(), seed=6, trace_format="azure",
                      transforms=TraceTransforms(rate_scale=3.0, rate_profile=[(0, 0.5)], limit=500)))


def test_a_stored_run_keeps_its_rate_profile_as_the_option_takes_it(tmp_path):
    from sim.replay import TraceTransforms, trace_read

    assert trace_read(TraceTransforms(rate_profile=[(0, 1), (14400, 2.5)], rate_scale=0.5), None) == {
        "transforms": {"rate_scale": 0.5, "rate_profile": "0:1,14400:2.5"}}
    assert trace_read(TraceTransforms(), None) is None
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = replay(bundled_trace_path(), make_config(seed=1, storage={"url": url}), trace_format="azure",
                    transforms=TraceTransforms(window_end_s=300, rate_profile=[(0, 0.5), (300, 1.5)]))
    assert get_run(make_engine(url), result.run_id)["config"]["trace_read"] == {
        "transforms": {"window_end_s": 300, "rate_profile": "0:0.5,300:1.5"}}


def test_prepared_trace_gives_the_reader_whose_left_out_rows_a_run_summary_holds(tmp_path):
    from sim.replay import TraceTransforms, prepared_trace, rows_left_out

    path = tmp_path / "small_burstgpt.csv"  # BurstGPT's layout: one ChatGPT row, one failed GPT-4 row
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "0,GPT-4,10,3,13,API log\n1,ChatGPT,10,3,13,API log\n2,GPT-4,12,0,12,API log\n")
    reader, stream = prepared_trace(path, seed=1, transforms=TraceTransforms(speed_up=2), trace_format="burstgpt",
                                    trace_options={"models": "GPT-4", "failed": "drop"})
    assert rows_left_out(reader) == {}  # nothing read yet
    assert [r.arrival_s for r in stream] == [0.0]
    assert rows_left_out(reader) == {"trace_rows_left_out": {"models": 1, "failed": 1}}
    reader, stream = prepared_trace(iter(list(read_trace(path, "burstgpt"))), seed=1)
    assert reader is None and rows_left_out(reader) == {} and len(list(stream)) == 3


def test_a_run_summary_counts_the_bad_rows_on_error_skip_skipped_with_the_first_errors(tmp_path):
    from sim.replay import prepared_trace, rows_left_out

    path = tmp_path / "t.csv"
    path.write_text("request_id,arrival_s,prompt_tokens,output_tokens\na,0,10,2\nb,1,x,2\nc,2,10,2\n"
                    + "".join(f"d{i},3,10,-{i + 1}\n" for i in range(4)))
    reader, stream = prepared_trace(path, seed=1, trace_options={"on_error": "skip"})
    assert [r.request_id for r in stream] == ["a", "c"]
    assert rows_left_out(reader) == {
        "trace_rows_left_out": {"bad rows skipped": 5},
        "trace_bad_rows": [f"{path}:3: field 'prompt_tokens': expected a non-negative integer, got 'x'",
                           f"{path}:5: field 'output_tokens': expected a non-negative integer, got '-1'",
                           f"{path}:6: field 'output_tokens': expected a non-negative integer, got '-2'"]}


@pytest.mark.parametrize(("bad", "field", "reason"), [
    (TraceRequest("x", -1.0, 100, 10), "arrival_s", "expected a finite non-negative number of seconds, got -1.0"),
    (TraceRequest("x", float("inf"), 100, 10), "arrival_s", "expected a finite non-negative number of seconds, got inf"),
    (TraceRequest("x", 1.0, -100, 10), "prompt_tokens", "expected an integer from 0 to 2,147,483,647, got -100"),
    (TraceRequest("x", 1.0, 100, 2.5), "output_tokens", "expected an integer from 0 to 2,147,483,647, got 2.5"),
    (TraceRequest("r1", 1.0, 100, 10), "request_id",
     "duplicate request id 'r1': an earlier request has it (request ids must be unique in a trace)"),
])
def test_a_stream_of_requests_is_checked_as_a_file_reader_checks_rows(bad, field, reason):
    # Served, the first would have an invented queue (stored arrival -1 s), the second a 1-token prompt.
    from sim.traces.stream_check import TraceRequestError

    trace = [TraceRequest(f"r{i}", 0.1 * i, 100, 10) for i in range(3)] + [bad]
    with pytest.raises(TraceRequestError) as e:
        replay(trace, make_config(), record=False)
    assert str(e.value) == f"trace request {bad.request_id!r} (request 3 of the stream): field {field!r}: {reason}"
    with pytest.raises(TraceRequestError):  # what `repeat` reads, too: each copy
        list(prepare_trace(lambda: iter(trace), seed=0, transforms=TraceTransforms(repeat=2)))


@pytest.mark.parametrize("container", [list, tuple])
def test_a_list_of_requests_can_be_repeated(container):
    """docs/traces.md: ``repeat`` takes a list (it can be read again); it was checked into a one-pass
    stream first and refused as one."""
    from sim.traces import TraceRequest

    requests = container(TraceRequest(str(i), i * 0.1, 100, 10) for i in range(20))
    copies = list(prepare_trace(requests, seed=0, transforms=TraceTransforms(repeat=2)))
    assert len(copies) == 40 and len({r.request_id for r in copies}) == 40
    with pytest.raises(ValueError, match="repeat needs a trace that can be read again"):
        list(prepare_trace(iter(requests), seed=0, transforms=TraceTransforms(repeat=2)))


def test_transforms_are_given_by_name():
    """`TraceTransforms(2)` set window_start_s silently (simulator.md once listed the fields in another order)."""
    with pytest.raises(TypeError):
        TraceTransforms(2)
