"""What a stored request row's latency columns hold, per status: the summary's latencies for a completed
request, none (NULL) for any other, so SQL aggregates over the ``request`` table agree with the summary."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from controlplane.request_latency import NO_LATENCIES, latencies, stored_latencies
from controlplane.storage.columns import REQUEST_STATUSES
from controlplane.testing import make_trace, replay_with


def test_only_a_completed_row_has_latencies():
    times = (1.0, 1.5, 2.0, 4.0, 5)  # arrival, scheduled, first token, finish, output tokens
    assert stored_latencies("completed", *times) == latencies(*times) == (1.0, 0.5, 3.0, 0.5)
    for status in REQUEST_STATUSES - {"completed"}:
        assert stored_latencies(status, *times) == NO_LATENCIES, status
    # A request refused at arrival: finish = arrival, never scheduled. Its E2E was 0 s.
    assert stored_latencies("rejected", 3.0, None, None, 3.0, 16) == (None, None, None, None)


def test_sql_latency_aggregates_over_every_row_match_the_summary(tmp_path):
    """The analyst's check: a replay with requests for a model nobody serves (rejected at arrival), whose rows
    stored an E2E of 0 s, so ``avg(e2e_s)`` over the table fell below the summary's mean."""
    db = tmp_path / "r.db"
    trace = [dataclasses.replace(t, model="ghost") if i % 3 == 1 else t for i, t in enumerate(make_trace(30, qps=4))]
    res = replay_with(trace=trace, db_url=f"sqlite:///{db}")
    s = res.summary
    assert s["num_rejected"] == 10 and s["num_completed"] == 20
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select status, ttft_s, tpot_s, e2e_s, queue_s, finish_s - arrival_s from request "
                            "where run_id = ?", (res.run_id,)).fetchall()
        means = conn.execute("select avg(ttft_s), avg(e2e_s), avg(queue_s), count(e2e_s) from request "
                             "where run_id = ?", (res.run_id,)).fetchone()
    rejected = [r for r in rows if r[0] == "rejected"]
    assert len(rejected) == 10 and all(r[1:5] == (None,) * 4 and r[5] == 0.0 for r in rejected)
    assert means[3] == s["num_completed"]
    assert means[:3] == pytest.approx((s["ttft_mean_s"], s["e2e_mean_s"], s["queue_mean_s"]), abs=1e-8)


def test_a_held_replys_ttft_is_the_replys_and_it_has_no_tpot():
    times = (1.0, 1.5, 2.0, 4.0, 5)  # arrival, scheduled, first token (generated), finish, output tokens
    assert latencies(*times, reply_held=True) == stored_latencies("completed", *times, reply_held=True) == (
        3.0, None, 3.0, 0.5)


def test_a_reply_held_for_a_sync_answer_check_has_the_replys_ttft_in_its_row_and_the_summary(tmp_path):
    # the rows said TTFT 0.01-0.14 s (the generation's first token) for streams whose client got its first text
    # after 3-6 s: the answer's check held the reply; an unchecked answer is held too (the draw is at the answer)
    db = tmp_path / "held.db"
    trace = make_trace(60, qps=4)
    guardians = {"models": [{"name": "g", "latency": {"base_s": 0.3}}]}
    for mode, rate, held in (("sync", 1.0, True), ("sync", 0.5, True), ("async", 1.0, False)):
        res = replay_with(trace=trace, db_url=f"sqlite:///{db}", guardians=guardians,
                          plugins={"settings": {"sampled-guardian": {"rate": rate, "mode": mode, "guardian": "g"}}})
        with sqlite3.connect(db) as c:
            rows = c.execute("SELECT ttft_s, e2e_s, tpot_s, first_token_s - arrival_s, guardian_verdict FROM request "
                             "WHERE run_id = ? AND status = 'completed'", (res.run_id,)).fetchall()
        assert len(rows) == 60 and all(r.reply_held is held for r in res.requests), mode
        if held:
            assert all(ttft == e2e and tpot is None and generated < ttft for ttft, e2e, tpot, generated, _ in rows)
            assert res.summary["ttft_p50_s"] == res.summary["e2e_p50_s"] and res.summary["tpot_p50_s"] is None
            assert rate == 1.0 or any(verdict is None for *_, verdict in rows)  # unsampled: held all the same
        else:  # an async check holds no reply
            assert all(ttft == generated < e2e and tpot is not None for ttft, e2e, tpot, generated, _ in rows)
