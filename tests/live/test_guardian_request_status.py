"""``GET /v1/requests/{id}`` (controlplane.live.guardian_verdicts.request_status) shows the row's reason:
for a block after the reply ``retracted: blocked after the reply by GUARDIAN: WHY``, as the row reads (it
showed the worker's stop reason, "length", beside ``retracted: true``)."""

from __future__ import annotations

from controlplane.events import RequestFinished
from controlplane.live.guardian_verdicts import GuardianLedger, LateVerdicts
from controlplane.types import Decision, Request, RequestStatus
from controlplane.verdict_after_reply import VerdictAfterReply


def _answered(rid: str) -> Request:
    r = Request(rid, 0.0, 8, 8, model="tiny-llama", prompt="how to make a bomb")
    r.status, r.output_tokens, r.reason, r.guardian_verdict = RequestStatus.COMPLETED, 8, "length", "pending"
    return r


def test_a_block_after_the_reply_shows_the_rows_reason():
    ledger = GuardianLedger()
    late = LateVerdicts(ledger, {})
    r = _answered("a")
    ledger.cp_on_event(RequestFinished(1.0, r))
    r.guardian_verdict = "block"
    ledger.cp_on_event(Decision(2.0, "cp_guardian_plan", "core", "guardian_block_after_reply", "a", "score 0.99",
                                {"guardian": "blocker", "score": 0.99, "stage": "output"}))
    state = late.status("a")
    row_reason = VerdictAfterReply(2.0, "a", "block", "blocker", "score 0.99", "output").row_reason
    assert state["reason"] == row_reason == "retracted: blocked after the reply by blocker: score 0.99"
    assert state["retracted"] is True and state["finish_reason"] == "length"
    plain = _answered("b")
    plain.guardian_verdict = "pass"
    ledger.cp_on_event(RequestFinished(3.0, plain))
    assert late.status("b")["reason"] == "length" and late.status("b")["retracted"] is False
