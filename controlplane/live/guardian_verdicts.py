"""Verdicts that come after the answer: what the live driver does with an async guardian verdict.

* A block that arrives while the request is still generating (an async prompt check) ends the
  client's answer at once, OpenAI's way: ``finish_reason: "content_filter"`` (a stream ends with
  that chunk; the text already streamed stays with the client); when it had generated nothing
  yet, it is refused like a blocked prompt (400, code ``blocked``). The core stops its
  generation (at once, or at the end of its running batch: one iteration here) and records it
  ``blocked``, the reason naming the guardian.
* A verdict that arrives after the reply (an async answer check, or an async prompt check slower
  than the whole generation) is written to the request's row: ``guardian_verdict`` leaves
  ``pending`` for the final verdict, and a block sets the row's ``reason`` to ``retracted: blocked
  after the reply by GUARDIAN: WHY``. The row's status stays ``completed``: the answer was served
  (its latencies and goodput are the run's). `LateRows` batches these updates and writes them after
  the recorder has written the rows themselves.
* `GuardianLedger` (an observer plugin of the run) remembers the last `LEDGER_SIZE` finished
  requests and the late blocks, for ``GET /v1/requests/{id}`` (`request_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from controlplane.events import RequestFinished
from controlplane.hookspecs import hookimpl
from controlplane.types import Decision, ReasonCode, Request, RequestStatus

__all__ = ["LEDGER_SIZE", "GuardianLedger", "LateRows", "LateVerdicts", "request_status"]

log = logging.getLogger(__name__)

#: Finished requests ``GET /v1/requests/{id}`` still knows about (the oldest are forgotten).
LEDGER_SIZE = 10_000
#: How long a late verdict may wait before its row is written (more come in one batch).
ROW_DELAY_S = 0.5


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
    """A request as ``GET /v1/requests/{id}`` shows it."""
    finish = None
    if r.status is RequestStatus.COMPLETED:
        finish = "length" if r.output_tokens >= r.max_output_tokens else "stop"
    elif r.status is RequestStatus.BLOCKED and r.reason_code is None:
        finish = "content_filter"
    guardian = None
    if late is not None:
        guardian = dict(late)
    elif r.guardian_verdict is not None:
        guardian = {"verdict": r.guardian_verdict, "after_reply": False,
                    "reason": r.reason if r.status is RequestStatus.BLOCKED else None}
    return {
        "id": r.request_id, "object": "request", "model": r.model,
        "status": r.status.value, "finish_reason": finish, "reason": r.reason,
        "reason_code": r.reason_code.value if r.reason_code is not None else None,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.output_tokens, "cache_hit": r.cache_hit,
        "guardian_verdict": r.guardian_verdict, "guardian": guardian,
        "retracted": late is not None,
    }


class LateRows:
    """Writes late verdicts onto the request rows, in batches, once the rows themselves are written."""

    def __init__(self) -> None:
        self.session: Any = None
        self.pending: list[dict[str, Any]] = []
        self.written = 0
        self._task: asyncio.Task | None = None

    def add(self, run_id: int | None, request_id: str, verdict: str, reason: str | None) -> None:
        if self.session is None or self.session.recorder is None or run_id is None:
            return
        self.pending.append({"b_run": run_id, "b_rid": request_id, "b_verdict": verdict, "b_reason": reason})
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(ROW_DELAY_S)
        await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; True when nothing is left (False: the database is away; kept)."""
        if not self.pending:
            return True
        batch, self.pending = self.pending, []
        ok = await asyncio.to_thread(self._write, batch)
        if ok:
            self.written += len(batch)
        else:
            self.pending = batch + self.pending
        return ok

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        from sqlalchemy import bindparam, func, update
        from sqlalchemy.exc import SQLAlchemyError

        from controlplane.storage.models import Request as RequestRow

        recorder = self.session.recorder
        if not recorder.flush():  # the rows first: an update of a row not yet written would be lost
            return False
        t = RequestRow.__table__
        stmt = (update(t).where(t.c.run_id == bindparam("b_run"), t.c.request_id == bindparam("b_rid"))
                .values(guardian_verdict=bindparam("b_verdict"),
                        reason=func.coalesce(bindparam("b_reason"), t.c.reason)))
        try:
            with self.session.engine.begin() as conn:
                conn.execute(stmt, batch)
        except SQLAlchemyError as exc:
            log.warning("could not write %d late guardian verdicts yet: %s", len(batch), exc)
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if not await self.flush():
            log.error("%d late guardian verdicts were not written to their request rows (database away)",
                      len(self.pending))


class LateVerdicts:
    """The driver's side of a verdict that reached a request already answered or still generating."""

    def __init__(self, ledger: GuardianLedger, live: dict[str, Any]) -> None:
        self.ledger = ledger
        self.live = live
        self.rows = LateRows()
        self.run_id: int | None = None
        self._final: dict[str, str] = {}

    def attach(self, session: Any) -> None:
        self.rows.session = session
        self.run_id = session.run_id

    def after_verdict(self, r: Request, answered: bool) -> None:
        """Called after a verdict was fed to the core; ``answered``: the reply had left before."""
        rid = r.request_id
        if not answered:
            lr = self.live.get(rid)
            if (lr is not None and lr.result is None and r.guardian_verdict == "block"
                    and r.status in (RequestStatus.WAITING, RequestStatus.RUNNING)):
                # In its running batch: the core takes it off at the batch's end; the client's answer
                # ends now (nothing generated yet: refused like a blocked prompt).
                code = None if lr.generated else ReasonCode.BLOCKED
                lr.resolve(lr.final("blocked", r.reason or "blocked by a guardian", code))
            return
        verdict = r.guardian_verdict
        if verdict in (None, "pending") or self._final.get(rid) == "block":
            return  # more verdicts to come (guardians in parallel, a cascade's next tier); a block stays
        self._final[rid] = verdict
        if len(self._final) > LEDGER_SIZE:
            del self._final[next(iter(self._final))]
        reason = None
        if verdict == "block":
            late = self.ledger.late.get(rid, {})
            reason = f"retracted: blocked after the reply by {late.get('guardian')}: {late.get('reason')}"
        self.rows.add(self.run_id, rid, verdict, reason)

    def status(self, request_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """``GET /v1/requests/{id}``: a request still in flight or among the last finished (with
        API keys, only the key's tenant's own); None when unknown."""
        lr = self.live.get(request_id)
        r = lr.request if lr is not None else self.ledger.requests.get(request_id)
        if r is None or (tenant is not None and r.tenant != tenant):
            return None
        return request_status(r, self.ledger.late.get(request_id))
