"""A sync answer check whose reply was not held (controlplane.responses): the answer went out as it
was generated (live: its stream), so the check comes after the reply and a block retracts the answer;
the record never says withheld. (A planner whose settings said `mode: async` but whose plans said sync
recorded answers its clients had whole as `blocked`, in num_blocked, finish_reason content_filter.)"""

from __future__ import annotations

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import GuardianPlan
from controlplane.storage import make_engine
from controlplane.storage.queries import iter_rows
from controlplane.testing import make_trace, replay_with
from controlplane.types import RequestStatus

BLOCKER = {"name": "blocker", "threshold": 0.0}  # every score blocks


class SaysAsyncPlansSync(Plugin):
    """Its settings say async (so no reply is held), its plans say sync: the tester's keyword planner."""

    name = "says-async"

    class Settings(PluginSettings):
        mode: str = "async"
        stages: tuple[str, ...] = ("output",)

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        if stage != "output":
            return GuardianPlan(False, reason="prompts not checked")
        return GuardianPlan(True, "blocker", "sync", "keyword in prompt")


class KnownBlock(SaysAsyncPlansSync):
    """A verdict known already (a verdict cache's) for every answer, under settings that hold no reply."""

    name = "known-block"

    @hookimpl
    def cp_guardian_plan(self, ctx, request, stage):
        if stage != "output":
            return GuardianPlan(False, reason="prompts not checked")
        return GuardianPlan(True, "blocker", "async", "known", cached={"verdict": "block", "guardian": "blocker",
                                                                       "reason": "seen before"})


def _rows(db_url, run_id):
    engine = make_engine(db_url)
    try:
        return {r["request_id"]: r for r in iter_rows(engine, run_id, "requests")}
    finally:
        engine.dispose()


def test_a_sync_plan_for_a_reply_not_held_blocks_after_the_reply(tmp_path):
    db = f"sqlite:///{tmp_path / 'u.db'}"
    res = replay_with(SaysAsyncPlansSync(), trace=make_trace(12, qps=3), db_url=db, guardians={"models": [BLOCKER]})
    assert res.summary["num_blocked"] == 0 and res.summary["num_completed"] == 12
    assert res.summary["guardian_blocks_after_reply"] == 12
    for r in res.requests:
        assert r.status is RequestStatus.COMPLETED and not r.reply_held and r.guardian_verdict == "block"
    checks = [d for d in res.decisions if d.action == "guardian_check"]
    assert len(checks) == 12 and all(d.payload["mode"] == "async" and d.payload["asked_mode"] == "sync"
                                     and "checked after the reply" in d.reason for d in checks)
    assert len([d for d in res.decisions if d.action == "guardian_block_after_reply"]) == 12
    rows = _rows(db, res.run_id)
    assert {(r["status"], r["guardian_verdict"]) for r in rows.values()} == {("completed", "block")}
    assert all(r["reason"].startswith("retracted: blocked after the reply by blocker") for r in rows.values())
    assert all(r["tpot_s"] is not None for r in rows.values())  # its tokens went out as generated


def test_a_known_block_for_a_reply_not_held_is_a_block_after_the_reply(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    res = replay_with(KnownBlock(), trace=make_trace(8, qps=2), db_url=db, guardians={"models": [BLOCKER]})
    assert res.summary["num_blocked"] == 0 and res.summary["guardian_blocks_after_reply"] == 8
    cached = [d for d in res.decisions if d.action == "guardian_cached"]
    assert len(cached) == 8 and all(d.payload["after_reply"] for d in cached)
    rows = _rows(db, res.run_id)
    assert {(r["status"], r["guardian_verdict"]) for r in rows.values()} == {("completed", "block")}
    assert all(r["reason"] == "retracted: blocked after the reply by blocker: seen before" for r in rows.values())


def test_a_held_reply_still_withholds_a_blocked_answer():
    # a planner whose settings say sync holds every reply: its sync block withholds, as before
    class SaysSync(SaysAsyncPlansSync):
        class Settings(PluginSettings):
            mode: str = "sync"
            stages: tuple[str, ...] = ("output",)

    res = replay_with(SaysSync(), trace=make_trace(6, qps=2), guardians={"models": [BLOCKER]})
    assert res.summary["num_blocked"] == 6 and not res.summary.get("guardian_blocks_after_reply")
    assert all(r.status is RequestStatus.BLOCKED and r.reply_held for r in res.requests)
