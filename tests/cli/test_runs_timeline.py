"""`runs show --timeline`, `runs compare --decisions` and `runs plot`: a run's scale decisions as a
table, where policies differ, and a PNG of replicas, load, queue and latency."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.cli.runs_timeline import decision_differences
from controlplane.testing import make_config, make_trace, replay_with

BASE = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "static-memory",
        "sampled-guardian", "builtin-latency-models"]
runner = CliRunner()


def _record(url: str, active: str, shadow: list[str] | None = None) -> int:
    settings = {"hpa": {"target": 4, "metric_window_s": 10, "sync_period_s": 5, "max_replicas": 8},
                "slo-planner": {"max_replicas": 8, "scale_down_delay_s": 60}}
    enabled = [active, *BASE, *(["shadow"] if shadow else [])]
    plugin_settings = {active: settings[active]}
    if shadow:
        plugin_settings["shadow"] = {"policies": shadow, "settings": {s: settings[s] for s in shadow}}
    cfg = make_config(cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 15.0}]},
                      plugins={"enabled": enabled, "settings": plugin_settings}, storage={"url": url},
                      slo={"ttft_s": 2.0, "tpot_s": 0.1})
    return replay_with(trace=make_trace(1200, qps=10.0), config=cfg, db_url=url).run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('tl') / 'runs.db'}"
    return url, _record(url, "hpa", ["slo-planner"]), _record(url, "slo-planner")


def test_timeline_lists_active_and_shadow_decisions(runs):
    url, with_shadow, _ = runs
    res = runner.invoke(app, ["runs", "show", str(with_shadow), "--db", url, "--timeline", "--full"],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "scale decisions" in res.output and "hpa" in res.output and "slo-planner" in res.output
    assert "shadow" in res.output and "(active " in res.output  # a shadow row names the active target
    assert "capacity_per_replica_per_s=" in res.output  # signals are printed
    assert "--full shows them whole" not in res.output
    short = runner.invoke(app, ["runs", "show", str(with_shadow), "--db", url, "--timeline"], env={"COLUMNS": "250"})
    assert "--full shows them whole" in " ".join(short.output.split())  # (it cut them without saying how to see them)
    missing = runner.invoke(app, ["runs", "show", "999", "--db", url, "--timeline"])
    assert missing.exit_code != 0 and "run 999 not found" in missing.output


def test_a_run_without_scale_decisions_says_so_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = replay_with(trace=make_trace(20), config=make_config(storage={"url": url}), db_url=url).run_id
    res = runner.invoke(app, ["runs", "show", str(run_id), "--db", url, "--timeline"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"run {run_id}: no scale decisions recorded (its replica count never changed)"


def test_a_run_whose_decisions_were_not_stored_does_not_say_its_count_never_changed(tmp_path):
    """A `record: summary` sweep run of 5 scale events said "its replica count never changed"."""
    from sim.sweep import load_spec, run_sweep
    from sim.traces.bundled import bundled_default_config_path

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = {"name": "s", "config": str(bundled_default_config_path()), "trace": {"format": "azure", "limit": 1500},
            "seeds": [0], "record": "summary", "space": {"control.tick_s": [1.0]}}
    run_sweep(load_spec(data=spec), url, backend="serial")
    res = runner.invoke(app, ["runs", "show", "1", "--db", url, "--timeline"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "never changed" not in said and "scale events: their decisions were not stored" in said, said


def test_compare_decisions_shows_where_policies_differ(runs):
    url, a, b = runs
    res = runner.invoke(app, ["runs", "compare", str(a), str(b), "--db", url, "--decisions", "--no-ci"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"run {a} vs run {b} (where they differ)" in res.output
    assert f"run {a}: active vs shadow slo-planner" in res.output


def test_plot_writes_a_png(runs, tmp_path):
    url, run_id, _ = runs
    out = tmp_path / "run.png"
    res = runner.invoke(app, ["runs", "plot", str(run_id), "--db", url, "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert "replicas" in res.output and "scale decisions" in res.output


def test_plot_of_a_run_with_nothing_recorded_says_why_and_writes_nothing(tmp_path):
    from datetime import datetime, timezone

    from controlplane.storage import RunRecorder, make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with RunRecorder(engine) as rec:  # (a run that failed before it recorded anything: only its error)
        rec.start_run(name="failed", mode="sim", trace="t.csv", trace_format="canonical", seed=0, config={},
                      plugins=[], started_at=datetime.now(timezone.utc))
        rec.finish_run(1, status="failed", summary={"error": "RuntimeError: broke"},
                       finished_at=datetime.now(timezone.utc), wall_s=0.1, sim_end_s=0.0)
    engine.dispose()
    res = runner.invoke(app, ["runs", "plot", "1", "--db", url, "-o", str(tmp_path / "run.png")])
    assert res.exit_code == 2 and not (tmp_path / "run.png").exists()
    assert "run 1 has nothing to plot" in res.output and "status failed: RuntimeError: broke" in res.output


def test_differences_are_the_intervals_where_targets_disagree():
    a = {"m": [(float("-inf"), 1), (10.0, 3), (50.0, 2)]}
    b = {"m": [(float("-inf"), 1), (20.0, 3), (40.0, 4)]}
    diffs = decision_differences(a, b)
    assert diffs == [{"model": "m", "start_s": 10.0, "end_s": 20.0, "a": 3, "b": 1},
                     {"model": "m", "start_s": 40.0, "end_s": 50.0, "a": 3, "b": 4},
                     {"model": "m", "start_s": 50.0, "end_s": None, "a": 2, "b": 4}]
    assert decision_differences(a, a) == []


def test_differences_stop_where_the_shorter_run_ended(tmp_path):
    """A run of 500 requests that ended at 235 s was shown at its last target "to end" of a 3,443 s run."""
    a = {"m": [(float("-inf"), 1), (10.0, 3)]}
    b = {"m": [(float("-inf"), 1), (20.0, 5), (300.0, 6)]}
    assert decision_differences(a, b, end_s=100.0) == [{"model": "m", "start_s": 10.0, "end_s": 20.0, "a": 3, "b": 1},
                                                       {"model": "m", "start_s": 20.0, "end_s": 100.0, "a": 3, "b": 5}]
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    for n in (40, 10):
        replay_with(trace=make_trace(n, qps=1), config=make_config(storage={"url": url}), db_url=url)
    res = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--decisions", "--db", url])
    assert res.exit_code == 0, res.output
    assert "when run 2 ended" in " ".join(res.output.split())


def test_a_model_only_one_run_serves_is_listed_not_dropped():
    """Two runs of disjoint models read "the same targets throughout"; a model only A served was left out."""
    a = {"coder": [(float("-inf"), 2)], "small": [(float("-inf"), 0), (10.0, 6), (90.0, 2)]}
    b = {"coder": [(float("-inf"), 2)], "chat": [(float("-inf"), 1)]}
    assert decision_differences(a, b, end_s=100.0) == [
        {"model": "chat", "start_s": 0.0, "end_s": 100.0, "a": "not served", "b": "1"},
        {"model": "small", "start_s": 0.0, "end_s": 100.0, "a": "0-6", "b": "not served"}]


def test_a_run_that_never_scaled_is_compared_at_its_starting_count(tmp_path):
    """A seed-autoscaler run of 0 scale events against hpa's of 9 said "the same targets throughout"."""
    from controlplane.cli.runs_timeline import starting_replicas, target_steps
    from controlplane.storage import make_engine

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    models = {"models": [{"name": "default", "replicas": 2}]}
    never = replay_with(trace=make_trace(20), config=make_config(cluster=models, storage={"url": url}), db_url=url)
    moved = [{"action": "scale", "plugin": "hpa", "subject": "default", "time_s": 10.0, "payload": {"from": 2, "to": 5}}]
    engine = make_engine(url)
    start = starting_replicas(engine, never.run_id)
    engine.dispose()
    assert start == {"default": 2}
    assert decision_differences(target_steps([], start=start), target_steps(moved)) == [
        {"model": "default", "start_s": 10.0, "end_s": None, "a": 2, "b": 5}]


def test_the_latency_points_stay_within_the_run(tmp_path):
    """A run that ended at 30.5 s had its last p90 point drawn at 45 s (the middle of the 30-60 s window)."""
    from controlplane.cli.runs_plot import _latency_windows
    from controlplane.storage import make_engine

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    res = replay_with(trace=make_trace(200, qps=5), config=make_config(storage={"url": url}, sim={"until_s": 30.5}),
                      db_url=url)
    engine = make_engine(url)
    xs = _latency_windows(engine, res.run_id, 30.0)["ttft"][0]
    engine.dispose()
    assert xs.max() <= res.summary["sim_end_s"] == 30.5 and len(xs) == 2


def test_a_reason_with_brackets_is_shown_as_written():
    """The seed autoscaler's "trend 1.00 [slope +0.045/s²]" lost its bracket: read as a style tag."""
    from rich.console import Console

    from controlplane.cli.runs_timeline import timeline_table

    row = {"time_s": 5.0, "plugin": "seed-autoscaler", "action": "scale", "subject": "default",
           "payload": {"from": 1, "to": 2, "confidence": 0.5}, "reason": "trend 1.00 [slope +0.045/s²], queue 1.00 [72]"}
    console = Console(width=250, record=True)
    console.print(timeline_table([row], "t", full=True))
    assert "trend 1.00 [slope +0.045/s²], queue 1.00 [72]" in console.export_text()


def test_a_plot_of_several_models_draws_each_models_replicas_with_its_decisions(tmp_path):
    """Models a and b on scheduled-replicas: one line summed over both, each marker at one model's own target."""
    from controlplane.cli.runs_plot import load_replicas_by_model, plot_run
    from controlplane.storage import make_engine

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    models = [{"name": "a", "replicas": 1, "cold_start_s": 5.0}, {"name": "b", "replicas": 2, "cold_start_s": 5.0}]
    schedule = {"schedule": [[0, 2], [20, 3]], "models": {"b": [[0, 1], [30, 2]]}}
    cfg = make_config(cluster={"models": models}, storage={"url": url},
                      plugins={"enabled": ["scheduled-replicas", *BASE], "settings": {"scheduled-replicas": schedule}})
    run_id = replay_with(trace=make_trace(300, qps=5.0), config=cfg, db_url=url).run_id
    engine = make_engine(url)
    per_model = load_replicas_by_model(engine, run_id)
    drawn = plot_run(engine, run_id, tmp_path / "run.png")
    engine.dispose()
    assert sorted(per_model) == ["a", "b"] and drawn["replicas_per_model"] == ["a", "b"]
    t, ready, starting = per_model["b"]
    assert ready[0] + starting[0] == 2 and ready[-1] + starting[-1] == 2 and min(ready + starting) == 1


def test_an_unplaced_replica_shows_in_the_timeline_and_the_targets_follow_what_was_placed():
    """A pool of 2 slots: "scale 2 -> 3" then no slot for the third. The timeline showed the scale alone and
    `runs compare --decisions` said "active 3" though 2 ran."""
    from rich.console import Console

    from controlplane.cli.runs_timeline import _unplaced_targets, target_steps, timeline_table

    rows = [{"time_s": 5.0, "plugin": "hpa", "action": "scale", "subject": "m", "payload": {"from": 2, "to": 3},
             "reason": "hpa: 3", "is_error": False},
            {"time_s": 5.1, "plugin": "core", "action": "scale_unplaced", "subject": "m",
             "payload": {"worker": "m-2", "placed": False}, "is_error": False,
             "reason": "replica m-2 could not be placed: unplaceable: no free slot for m-2"},
            {"time_s": 6.0, "plugin": "shadow-x", "action": "shadow_scale", "subject": "m",
             "payload": {"from": 2, "to": 3, "active_to": 3}, "reason": "x", "is_error": False}]
    _unplaced_targets(rows)
    assert target_steps(rows, start={"m": 2}) == {"m": [(float("-inf"), 2), (5.0, 2)]}  # (3 was never placed)
    shadow = target_steps(rows, action="shadow_scale", plugin="shadow-x", start={"m": 2})
    assert decision_differences(target_steps(rows, start={"m": 2}), shadow)[-1] == {
        "model": "m", "start_s": 6.0, "end_s": None, "a": 2, "b": 3}  # (the active 2 that ran, not 3)
    console = Console(width=250, record=True)
    console.print(timeline_table(rows, "t", full=True))
    line = next(x for x in console.export_text().splitlines() if "unplaced" in x)
    assert "core" in line and "3 -> 2" in line and "no free slot for m-2" in line


def test_a_plot_is_written_in_the_format_its_extension_names(tmp_path):
    """`runs plot 1 -o run.svg` (or .pdf, .txt) wrote a PNG under that name."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = replay_with(trace=make_trace(50), config=make_config(storage={"url": url}), db_url=url).run_id
    magic = {"run.svg": b"<svg", "run.pdf": b"%PDF", "run.PNG": b"\x89PNG"}
    for name, head in magic.items():
        res = runner.invoke(app, ["runs", "plot", str(run_id), "--db", url, "-o", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert head in (tmp_path / name).read_bytes()[:400], name  # (an SVG starts with its XML header)
    for name in ("run.txt", "run"):
        res = runner.invoke(app, ["runs", "plot", str(run_id), "--db", url, "-o", str(tmp_path / name)])
        assert res.exit_code == 2 and "supported: .png, .svg, .pdf" in " ".join(res.output.split()), res.output
        assert not (tmp_path / name).exists()


def test_counts_never_placed_are_no_targets_not_even_for_the_milliseconds_until_the_pool_said_so():
    """A pool of 2 slots, "scale 1 -> 4" at 17 s, then no slot for two of the three: `runs compare --decisions`
    listed 4 and 3 as zero-length intervals (17-17 s) before the 2 that ran, again at each retry."""
    from controlplane.cli.runs_timeline import _unplaced_targets, target_steps

    def scale(t, frm, to):
        return {"time_s": t, "plugin": "slo-planner", "action": "scale", "subject": "tiny",
                "payload": {"from": frm, "to": to}, "reason": "x", "is_error": False}

    def unplaced(t, wid):
        return {"time_s": t, "plugin": "core", "action": "scale_unplaced", "subject": "tiny",
                "payload": {"worker": wid, "placed": False}, "reason": "no free slot", "is_error": False}

    rows = [scale(17.0073, 1, 4), unplaced(17.0087, "tiny-2"), unplaced(17.0089, "tiny-3"),
            {"time_s": 18.006, "plugin": "hpa", "action": "shadow_scale", "subject": "tiny",
             "payload": {"from": 1, "to": 4, "active_to": 4}, "reason": "x", "is_error": False},
            scale(33.0042, 2, 4), unplaced(33.0053, "tiny-4"), unplaced(33.0054, "tiny-5")]
    _unplaced_targets(rows)
    active = target_steps(rows, start={"tiny": 1})
    assert decision_differences(active, {"tiny": [(float("-inf"), 1)]}, 67.0) == [
        {"model": "tiny", "start_s": 17.0073, "end_s": 67.0, "a": 2, "b": 1}]
    shadow = target_steps(rows, action="shadow_scale", plugin="hpa", start={"tiny": 1})
    assert decision_differences(active, shadow) == [
        {"model": "tiny", "start_s": 17.0073, "end_s": 18.006, "a": 2, "b": 1},
        {"model": "tiny", "start_s": 18.006, "end_s": None, "a": 2, "b": 4}]


def test_a_held_scale_ups_cut_reason_keeps_the_cores_clause_saying_until_when():
    """An SRE soak: `runs show 1 --timeline` cut a held scale-up's reason at 160 characters before its actionable
    part ("... | core: 3 -> 2 (unplaced: the last..."); when the next scale-up may come was shown with --full only."""
    from rich.console import Console

    from controlplane.cli.runs_timeline import REASON_CHARS, shortened_reason, timeline_table

    policy = ("hpa: load 4.10 per replica over 10 s > target 0.30 x 3 replicas: desired ceil(3 x 4.10 / 0.30) = 41, "
              "at most max_replicas 3 (load: requests queued and running per ready replica)")
    core = ("core: 3 -> 2 (unplaced: the last scale-up found no free device or worker slot; the next one waits until "
            "263.0s, 10.0s left)")
    row = {"time_s": 253.0, "plugin": "core", "action": "scale_held", "subject": "chat",
           "payload": {"from": 2, "to": 2, "wanted": 3, "unplaced_retry_s": 263.0}, "reason": f"{policy} | {core}"}
    short = shortened_reason(row["reason"])
    assert len(short) == REASON_CHARS and short.endswith(f"... | {core}") and short.startswith("hpa: load 4.10")
    console = Console(width=400, record=True)
    console.print(timeline_table([row], "t"))
    text = " ".join(console.export_text().split())
    assert "waits until 263.0s, 10.0s left)" in text and "--full shows them whole" in text
    # one clause: its start, as before; a last clause too long to fit whole: the reason's start and its end
    assert shortened_reason("x" * 200) == "x" * 157 + "..."
    long_last = shortened_reason("a" * 50 + " | " + "b" * 150 + " until 9.0s")
    assert len(long_last) == REASON_CHARS and long_last.startswith("a" * 37 + "...") and long_last.endswith("until 9.0s")
