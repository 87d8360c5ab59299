"""Guardian outcomes in SQL (SQLite and PostgreSQL): blocked requests with their verdict and reason in
the request table, each guardian's name, verdict and score in the decision rows, and the verdicts that
came after the reply written onto their rows (`controlplane.verdict_after_reply`)."""

from __future__ import annotations

import pytest

from controlplane import Plugin, hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.storage import make_engine
from controlplane.storage.early import ENV_SWITCH
from controlplane.storage.queries import iter_rows
from controlplane.testing import make_trace, replay_with


def test_blocked_requests_and_guardian_scores_are_stored(db_url):
    guardians = {"models": [{"name": "judge", "quality": {"separation": 12.0, "noise": 0.5}},
                            {"name": "rules-like", "threshold": 1.0}]}
    res = replay_with(trace=make_trace(40, qps=4), db_url=db_url, sim={"guardian_block_rate": 0.5},
                      guardians=guardians,
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "sync",
                                                                 "guardians": ["judge", "rules-like"]}}})
    engine = make_engine(db_url)
    try:
        requests = list(iter_rows(engine, res.run_id, "requests"))
        decisions = list(iter_rows(engine, res.run_id, "decisions"))
    finally:
        engine.dispose()
    blocked = [r for r in requests if r["status"] == "blocked"]
    assert 5 < len(blocked) < 35 and len(requests) == 40
    assert all(r["guardian_verdict"] == "block" and r["reason"].startswith("blocked by judge") for r in blocked)
    assert {r["guardian_verdict"] for r in requests if r["status"] == "completed"} == {"pass"}
    verdicts = [d for d in decisions if d["action"] == "guardian_verdict"]
    assert len(verdicts) == 80 and {d["payload"]["guardian"] for d in verdicts} == {"judge", "rules-like"}
    assert all(0.0 <= d["payload"]["score"] <= 1.0 for d in verdicts)
    outcomes = {d["subject"]: d["payload"] for d in decisions if d["action"] == "guardian_outcome"}
    assert {rid for rid, p in outcomes.items() if p["verdict"] == "block"} == {r["request_id"] for r in blocked}
    assert res.summary["num_blocked"] == len(blocked)


def _rows(db_url, run_id):
    engine = make_engine(db_url)
    try:
        return {r["request_id"]: r for r in iter_rows(engine, run_id, "requests")}, list(
            iter_rows(engine, run_id, "decisions"))
    finally:
        engine.dispose()


@pytest.fixture(params=["inline", "writer-process"])
def recorder_kind(request, monkeypatch):
    """A simulator run's rows written in its own process, or by a writer process (``FrontRecorder``)."""
    monkeypatch.setenv(ENV_SWITCH, "0" if request.param == "inline" else "1")
    return request.param


def test_verdicts_after_the_reply_reach_the_rows_as_live(db_url, recorder_kind):
    # Async answer checks: each row is written `pending` at the reply, then gets its final verdict;
    # a block retracts the answer (status completed, reason "retracted: ..."), as the daemon writes it.
    judge = {"name": "judge", "replicas": 2, "latency": {"base_s": 0.05, "max_batch": 4},
             "quality": {"separation": 12.0, "noise": 0.3}}
    res = replay_with(trace=make_trace(60, qps=6), db_url=db_url, sim={"guardian_block_rate": 0.3},
                      guardians={"models": [judge]},
                      plugins={"settings": {"sampled-guardian": {"rate": 1.0, "mode": "async", "guardian": "judge"}}})
    requests, decisions = _rows(db_url, res.run_id)
    checked = {d["subject"] for d in decisions if d["action"] == "guardian_check"}
    late = {d["subject"]: d for d in decisions if d["action"] == "guardian_block_after_reply"}
    assert len(checked) > 40 and 5 < len(late) < 35
    assert {requests[rid]["guardian_verdict"] for rid in checked} == {"pass", "block"}  # none left pending
    for rid in checked:
        row = requests[rid]
        assert row["status"] == "completed"
        if rid in late:
            assert row["guardian_verdict"] == "block"
            assert row["reason"] == f"retracted: blocked after the reply by judge: {late[rid]['reason']}"
        else:
            assert row["guardian_verdict"] == "pass" and row["reason"] is None
    assert {r.request_id: r.guardian_verdict for r in res.requests if r.request_id in checked} == {
        rid: requests[rid]["guardian_verdict"] for rid in checked}


def test_an_async_prompt_check_slower_than_the_reply_reaches_the_row(db_url, recorder_kind):
    slow = {"name": "slow", "latency": {"base_s": 2.0, "max_batch": 64}, "quality": {"separation": 12.0, "noise": 0.3}}
    res = replay_with(trace=make_trace(20, qps=2, output_tokens=8), db_url=db_url, sim={"guardian_block_rate": 0.5},
                      guardians={"models": [slow]}, plugins={"settings": {"sampled-guardian": {
                          "rate": 1.0, "mode": "async", "guardian": "slow", "stages": ["input"]}}})
    requests, decisions = _rows(db_url, res.run_id)
    late = {d["subject"] for d in decisions if d["action"] == "guardian_block_after_reply"}
    assert len(requests) == 20 and 3 < len(late) < 17
    assert all(r["status"] == "completed" for r in requests.values())  # every reply left before its verdict
    assert {rid for rid, r in requests.items() if r["guardian_verdict"] == "block"} == late
    assert {r["guardian_verdict"] for rid, r in requests.items() if rid not in late} == {"pass"}  # not blank
    assert all(requests[rid]["reason"].startswith("retracted: blocked after the reply by slow: score ")
               for rid in late)


class BlockThePromptPassTheAnswer(Plugin):
    """Async checks of both stages: the prompt's by ``always`` (blocks), the answer's by ``never`` (passes)."""

    name = "block-prompt-pass-answer"

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        return GuardianPlan(True, "always" if stage == "input" else "never", "async", "both stages")


def test_a_block_after_the_reply_stays_when_the_other_stage_passes_later(db_url):
    # The prompt's block comes 1 s after the reply, the answer's pass 2 s after it: the row stays blocked.
    guardians = {"models": [{"name": "always", "threshold": 0.0, "latency": {"base_s": 1.0}},
                            {"name": "never", "threshold": 1.0, "latency": {"base_s": 2.0}}]}
    res = replay_with(BlockThePromptPassTheAnswer(), trace=make_trace(3, qps=1, output_tokens=4), db_url=db_url,
                      guardians=guardians)
    requests, _ = _rows(db_url, res.run_id)
    assert len(requests) == 3
    for r in requests.values():
        assert r["status"] == "completed" and r["guardian_verdict"] == "block"
        assert r["reason"].startswith("retracted: blocked after the reply by always: ")
    assert {r.guardian_verdict for r in res.requests} == {"block"}
