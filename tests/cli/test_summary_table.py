"""The run summary table (`controlplane sim replay`, `runs show`): its rejection reasons stay readable."""

from __future__ import annotations

from rich.console import Console

from controlplane.cli.summary_table import MAX_REASON_ROWS, reason_rows, summary_table


def _text(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_a_reason_per_number_is_folded_into_one_row_after_the_most_frequent():
    # A plugin's reason without a 'category:' prefix is one summary key per distinct number.
    reasons = {f"prompt of {1500 + i} tokens > max_prompt_tokens 1500": 1 for i in range(40)}
    reasons["prompt of 7436 tokens > max_prompt_tokens 1500"] = 34
    text = _text(summary_table({"run_id": 2, "num_rejected": 74, "reject_reasons": reasons}, "run 2"))
    lines = [ln for ln in text.splitlines() if "not completed:" in ln]
    assert len(lines) == MAX_REASON_ROWS + 1
    assert "7436 tokens" in lines[0] and lines[0].rstrip(" │").endswith("34")  # the most frequent first
    assert "31 other reasons" in lines[-1] and "controlplane runs export 2 --what requests" in lines[-1]
    assert lines[-1].rstrip(" │").endswith("31")  # their requests


def test_few_reasons_are_all_shown_most_frequent_first():
    assert reason_rows({"queue full": 2, "overloaded": 5, "unknown model": 2}) == [
        ("overloaded", 5), ("queue full", 2), ("unknown model", 2)]
    rows = reason_rows({f"r{i}": 1 for i in range(MAX_REASON_ROWS + 1)})
    assert rows[-1] == ("1 other reason (each request's: controlplane runs export RUN --what requests)", 1)


def test_the_rates_say_what_span_they_are_over():
    """A window whose first request came 83 s in showed "simulated time 93" beside a throughput of 2.012 req/s
    for 20 requests: per the 9.94 s from the first arrival, which the table did not show."""
    from controlplane.testing import make_trace, replay_with

    import dataclasses

    trace = [dataclasses.replace(r, arrival_s=r.arrival_s + 83.0) for r in make_trace(20, qps=2)]
    summary = replay_with(trace=trace).summary
    text = _text(summary_table(summary, "run"))
    span = summary["sim_span_s"]
    assert summary["sim_end_s"] > 83 > span > 0
    assert "span: first arrival to end (s)" in text and "throughput (req/s over the span)" in text
    assert abs(summary["throughput_rps"] - summary["num_completed"] / span) < 1e-3


def test_a_cost_the_run_could_not_price_says_why_in_the_table():
    """The table showed "cost (USD) -", the reason only in --json's cost_error."""
    text = _text(summary_table({"num_requests": 1, "cost_usd": None,
                                "cost_error": "no price for GPU 't4': set cluster.gpu_prices.t4"}, "run"))
    assert "cost not known" in text and "no price for GPU 't4'" in text


def test_large_values_are_whole_numbers_and_slo_attainment_names_its_targets():
    """GPU-seconds read 1.991e+04; "SLO attainment" did not say against what."""
    from rich.console import Console

    from controlplane.cli.summary_table import summary_table

    console = Console(width=200, record=True)
    console.print(summary_table({"gpu_seconds": 19905.4, "slo_attainment": 0.9983,
                                 "slo_targets": {"ttft_s": 2.0, "tpot_s": 0.1}}, "run 1"))
    text = console.export_text()
    assert "19,905" in text and "e+04" not in text
    assert "SLO attainment (TTFT <= 2 s, TPOT <= 0.1 s)" in text


def test_guardian_figures_a_safety_review_needs_are_rows_of_show_and_compare():
    # a CPU guardian showed only "guardian GPU-seconds 0", and sync-all vs async-all "blocked by guardians
    # 96 vs 0" with no count of the answers retracted after the reply
    from controlplane.cli.summary_table import compare_table
    from controlplane.testing import replay_with
    from sim.traces.record import TraceRequest

    trace = [TraceRequest(str(i), i * 0.1, 16, 2, prompt=f"p{i}") for i in range(6)]
    spec = {"name": "rules", "kind": "rules", "gpus_per_replica": 0, "latency": {"base_s": 0.5}}
    runs = {mode: replay_with(trace=trace, sim={"guardian_block_rate": 1.0}, guardians={"models": [spec]},
                              plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": mode,
                                                                         "guardian": "rules"}}}).summary
            for mode in ("sync", "async")}
    text = _text(summary_table(runs["async"], "run"))
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in text.splitlines() if ln.count("│") >= 3}
    assert rows["answered, then blocked after the reply (retracted; counted completed)"] == "6"
    busy = runs["async"]["guardian_busy_s"]
    assert busy > 0 and rows["guardian busy seconds (any device)"] == f"{busy:.4g}" == rows["guardian rules: busy seconds"]
    assert rows["guardian GPU-seconds (busy)"] == "0"
    assert rows["guardian rules: checks"] == "6" and rows["guardian rules: answer checks asked"] == "6"
    assert rows["guardian rules: prompt checks asked"] == "0" and rows["guardian rules: timeouts"] == "0"
    assert rows["guardian rules: share of answers checked"] == "1"
    assert rows["guardian plan sampled-guardian: share of answers checked"] == "1"
    assert "guardian rules: mean wait in its queue (s)" in rows
    text = _text(compare_table(runs["sync"], runs["async"], "sync", "async"))
    line = next(ln for ln in text.splitlines() if "blocked after the reply" in ln)
    assert [c.strip() for c in line.split("│")[2:4]] == ["0", "6"]
    line = next(ln for ln in text.splitlines() if "blocked by guardians" in ln)
    assert [c.strip() for c in line.split("│")[2:4]] == ["6", "0"]
    assert any("guardian rules: timeouts" in ln for ln in text.splitlines())


def test_a_guardian_plan_that_checks_nothing_adds_no_row():
    """The bundled replay's sampled-guardian (rate 0) ended its table with 'share of answers checked  -'."""
    from controlplane.testing import make_trace, replay_with

    summary = replay_with(trace=make_trace(10)).summary
    assert summary["guardian_sampling"]["sampled-guardian"]["answers_checked_share"] is None
    assert "share of answers checked" not in _text(summary_table(summary, "run"))


def test_a_live_runs_end_is_its_run_time_not_simulated_time():
    """`live-replay` printed "simulated time (s) 35.95" right above "wall time (s) 35.95"; `runs compare` too."""
    from controlplane.cli.summary_table import compare_table

    summary = {"num_requests": 5, "sim_end_s": 35.95, "wall_s": 35.95}
    live = _text(summary_table(summary, "run", mode="live"))
    assert "run time (s)" in live and "simulated" not in live
    assert "simulated time (s)" in _text(summary_table(summary, "run", mode="sim"))
    assert "simulated time (s)" in _text(summary_table(summary, "run"))
    both_live = _text(compare_table(summary, summary, "a", "b", ("live", "live")))
    assert "run time (s)" in both_live and "simulated" not in both_live
    mixed = _text(compare_table(summary, summary, "a", "b", ("sim", "live")))
    assert "run time (s): simulated | live" in mixed


def test_a_run_where_no_request_arrived_has_no_span_from_a_first_arrival():
    """A replay whose window held no request said "span: first arrival to end (s)  1"; the GPU-seconds of its
    warm replica for that second stay (the replica was held)."""
    from controlplane.cli.summary_table import compare_table
    from controlplane.testing import replay_with

    summary = replay_with(trace=[]).summary  # (as `sim replay --window-start 5000` of the bundled trace)
    assert summary["num_requests"] == 0 and summary["sim_span_s"] == summary["sim_end_s"] > 0
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip()
            for ln in _text(summary_table(summary, "run")).splitlines() if ln.count("│") == 3}
    assert rows["span: first arrival to end (s)"] == "-" and rows["GPU-seconds"] not in ("-", "0")
    line = next(ln for ln in _text(compare_table(summary, {**summary, "num_requests": 3}, "a", "b")).splitlines()
                if "span: first arrival" in ln)
    assert [c.strip() for c in line.split("│")[2:5]] == ["-", f"{summary['sim_span_s']:g}", "-"]


def test_runs_show_and_compare_label_a_live_runs_end_as_run_time(tmp_path):
    from sqlalchemy import text
    from typer.testing import CliRunner

    from controlplane.cli import app
    from controlplane.storage import make_engine
    from controlplane.testing import make_config, make_trace, replay_with

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sim, live = (replay_with(trace=make_trace(20), config=make_config(storage={"url": url}), db_url=url).run_id
                 for _ in range(2))
    engine = make_engine(url)
    with engine.begin() as conn:  # (a live run's row as live-replay stores it, without starting a worker)
        conn.execute(text("UPDATE run SET mode = 'live' WHERE id = :id"), {"id": live})
    engine.dispose()

    def out(*args: str) -> str:
        res = CliRunner().invoke(app, [*args, "--db", url], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        return res.output

    assert "run time (s)" in out("runs", "show", str(live)) and "simulated time" not in out("runs", "show", str(live))
    assert "simulated time (s)" in out("runs", "show", str(sim))
    assert "run time (s): simulated | live" in out("runs", "compare", str(sim), str(live), "--no-ci")
    both = out("runs", "compare", str(live), str(live), "--no-ci")
    assert "run time (s)" in both and "simulated time" not in both


def test_a_guardians_checks_asked_are_not_labelled_checked():
    # checks_input / checks_output count checks asked, whatever their end: every check timing out read
    # "answers checked 6" beside "share of answers checked 0", where guardians.md's "checked" is a verdict got
    from controlplane.cli.summary_table import guardian_rows

    summary = {"guardians": {"slow": {"checks": 6, "checks_input": 0, "checks_output": 6, "timeouts": 6,
                                      "answers_checked_share": 0.0}}}
    rows = dict(guardian_rows(summary))
    assert rows["guardian slow: answer checks asked"] == (6,) and rows["guardian slow: share of answers checked"] == (0.0,)
    assert not [label for label in rows if label.endswith((": answers checked", ": prompts checked"))]
