"""Verdicts that come after the answer: what the live driver does with an async guardian verdict.

* A block that arrives while the request is still generating (an async prompt check) stops its
  text reaching the client at once. The core stops its generation (at once, or at the end of its
  running batch: one iteration here) and records it ``blocked``, the reason naming the guardian;
  the answer then says what the row records, OpenAI's way: tokens generated (the last batch's
  included), ``finish_reason: "content_filter"`` (a stream ends with that chunk; the text already
  streamed stays with the client); none, refused like a blocked prompt (400, code ``blocked``).
* A verdict that arrives after the reply (an async answer check, or an async prompt check slower
  than the whole generation) is written to the request's row by the run's SQL recorder, as in the
  simulator (`controlplane.verdict_after_reply`): ``guardian_verdict`` leaves ``pending`` for the
  final verdict, and a block sets the row's ``reason`` to ``retracted: blocked after the reply by
  GUARDIAN: WHY``. The row's status stays ``completed``: the answer was served.
* `GuardianLedger` (an observer plugin of the run) remembers the last `LEDGER_SIZE` finished
  requests and the late blocks, for ``GET /v1/requests/{id}`` (`request_status`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from controlplane.events import RequestFinished
from controlplane.hookspecs import hookimpl
from controlplane.types import Decision, Request, RequestStatus
from controlplane.verdict_after_reply import retracted_reason

__all__ = ["LEDGER_SIZE", "GuardianLedger", "LateVerdicts", "request_status"]

#: Finished requests ``GET /v1/requests/{id}`` still knows about (the oldest are forgotten).
LEDGER_SIZE = 10_000


class GuardianLedger:
    """Observer plugin: the last finished requests and the blocks that came after their reply."""

    name = "guardian-ledger"

    def __init__(self, size: int = LEDGER_SIZE) -> None:
        self.size = size
        self.requests: OrderedDict[str, Request] = OrderedDict()
        self.late: dict[str, dict[str, Any]] = {}  # request id -> the block after the reply

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is RequestFinished:
            rid = event.request.request_id
            self.requests[rid] = event.request
            self.requests.move_to_end(rid)
            while len(self.requests) > self.size:
                old, _ = self.requests.popitem(last=False)
                self.late.pop(old, None)
        elif type(event) is Decision and event.action == "guardian_block_after_reply" and event.subject:
            p = event.payload or {}
            self.late[event.subject] = {"verdict": "block", "guardian": p.get("guardian"), "score": p.get("score"),
                                        "stage": p.get("stage"), "reason": event.reason, "after_reply": True,
                                        "time_s": event.time_s}


def request_status(r: Request, late: dict[str, Any] | None) -> dict[str, Any]:
    """A request as ``GET /v1/requests/{id}`` shows it: its ``reason`` the row's (a block after the reply's
    ``retracted: blocked after the reply by GUARDIAN: WHY``)."""
    finish = None
    if r.status is RequestStatus.COMPLETED:
        finish = "length" if r.output_tokens >= r.max_output_tokens else "stop"
    elif r.status is RequestStatus.BLOCKED and (r.reason_code is None or r.output_tokens):
        finish = "content_filter"  # withheld: a blocked answer, or a prompt blocked after it generated
    guardian = None
    if late is not None:
        guardian = dict(late)
    elif r.guardian_verdict is not None:
        guardian = {"verdict": r.guardian_verdict, "after_reply": False,
                    "reason": r.reason if r.status is RequestStatus.BLOCKED else None}
    # a block after the reply: the row's reason (`verdict_after_reply`), not the worker's stop reason ("length")
    reason = retracted_reason(late.get("guardian"), late.get("reason")) if late is not None else r.reason
    return {
        "id": r.request_id, "object": "request", "model": r.model,
        "status": r.status.value, "finish_reason": finish, "reason": reason,
        "reason_code": r.reason_code.value if r.reason_code is not None else None,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.output_tokens, "cache_hit": r.cache_hit,
        "guardian_verdict": r.guardian_verdict, "guardian": guardian,
        "retracted": late is not None,
    }


class LateVerdicts:
    """The driver's side of a verdict that reached a request still generating, and of
    ``GET /v1/requests/{id}`` (a verdict after the reply reaches the row through the recorder)."""

    def __init__(self, ledger: GuardianLedger, live: dict[str, Any]) -> None:
        self.ledger = ledger
        self.live = live

    def after_verdict(self, r: Request) -> None:
        """Called after a verdict was fed to the core: a block of a request still generating
        stops its text reaching the client now."""
        lr = self.live.get(r.request_id)
        if (lr is not None and lr.result is None and r.guardian_verdict == "block"
                and r.status in (RequestStatus.WAITING, RequestStatus.RUNNING)):
            # In its running batch: the core takes it off at the batch's end (one iteration live),
            # counting that batch's token; the answer then follows what the core recorded
            # (`LiveDriver._finish_request`: tokens generated, content_filter; none, a 400 blocked).
            lr.withheld = True

    def status(self, request_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """``GET /v1/requests/{id}``: a request still in flight or among the last finished (with
        API keys, only the key's tenant's own); None when unknown."""
        lr = self.live.get(request_id)
        r = lr.request if lr is not None else self.ledger.requests.get(request_id)
        if r is None or (tenant is not None and r.tenant != tenant):
            return None
        return request_status(r, self.ledger.late.get(request_id))
