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
    assert rows["guardian rules: checks"] == "6" and rows["guardian rules: answers checked"] == "6"
    assert rows["guardian rules: prompts checked"] == "0" and rows["guardian rules: timeouts"] == "0"
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
