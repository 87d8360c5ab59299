"""The live driver's batches on real workers: a core ``Batch`` becomes one `StepCommand`, and the
worker's reply becomes tokens for the clients and events for the core.

What a worker's backend holds is tracked per request (`LiveRequest.registered_on`): a request is
registered with the backend when a batch first prefills it there, dropped at the worker's next
step when it is preempted, finished elsewhere or cancelled, and registered again (prompt plus
the output already streamed) when it is prefilled again from token 0. A prompt the batching
policy splits into chunks is prefilled by the backend at its first chunk; its first token is
held back until the core schedules the last chunk.

Every reply is reported as ``BatchFinished`` (one iteration, the backend's finished requests and
busy time), preceded by ``IterationTimed`` when the worker computed something. Out-of-memory
steps are ``BatchFailed``; after `MAX_OOM_STREAK` in a row, or any other error, the worker is
reported failed.

A request the worker could not compute (refused at registration, or a row that could not be
sampled: ``TokenOut.error``) fails alone: its client gets the reason (400, ``invalid``) and the
core a ``RequestFailed`` with it, fed before the batch's ``BatchFinished`` so that it leaves
at that boundary; the worker and the batch's other requests go on. A request that was in the
step of `QUARANTINE_AFTER` workers that failed is quarantined: failed (503, ``worker_failed``)
rather than retried on yet another replica (with no retry left, the core fails it itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane import events as ev
from controlplane.live.pool import WorkerPool
from controlplane.live.results import LiveRequest
from controlplane.live.worker_messages import (
    AddSpec,
    StepCommand,
    StepOutOfMemory,
    StepReply,
    TokenOut,
    WorkerLost,
    describe_error,
)
from controlplane.types import Batch, ReasonCode

log = logging.getLogger(__name__)

__all__ = ["MAX_OOM_STREAK", "QUARANTINE_AFTER", "BatchRunner", "PlannedStep", "iteration_row"]

#: Out-of-memory iterations in a row after which a worker is given up as failed.
MAX_OOM_STREAK = 8
#: Worker failures during a request's steps after which the request is failed, not retried.
QUARANTINE_AFTER = 2


@dataclass(frozen=True)
class PlannedStep:
    """One batch as a worker step, planned when the core started it."""

    worker_id: str
    start_s: float  # run time the driver carried out `StartBatch`
    cmd: StepCommand
    releases: tuple[LiveRequest, ...]  # requests whose last prefill chunk this is (their held token is due)


class BatchRunner:
    """Plans and runs worker steps for the driver; reports back through ``feed``.

    ``live`` is the driver's table of requests not yet answered; ``now_s`` its run clock;
    ``worker_failed(worker_id, reason)`` reports a dead worker (and calls `worker_lost` first);
    ``is_current(worker_id)`` says whether a reply from that worker still counts (the worker has
    not failed, the run goes on); ``max_retries`` is the core's ``cluster.max_retries``.
    """

    def __init__(
        self,
        pool: WorkerPool,
        live: dict[str, LiveRequest],
        *,
        now_s: Callable[[], float],
        feed: Callable[[Any], None],
        worker_failed: Callable[[str, str], None],
        is_current: Callable[[str], bool],
        max_retries: int | None = None,
    ) -> None:
        self.pool = pool
        self.live = live
        self.now_s = now_s
        self.feed = feed
        self.worker_failed = worker_failed
        self.is_current = is_current
        self.max_retries = max_retries  # the core's re-routes after a worker failure (None: unknown)
        self._pending_removes: dict[str, set[str]] = {}  # worker -> requests to drop at its next step
        self._oom_streak: dict[str, int] = {}
        self._strikes: dict[str, int] = {}  # request -> workers that failed during its steps
        self._in_step: dict[str, StepCommand] = {}  # worker -> the step it is running

    def plan(self, b: Batch) -> PlannedStep:
        """The step for batch ``b``; registers its new prefills with the worker (call at `StartBatch`)."""
        wid = b.worker_id
        start_s = self.now_s()
        removes = self._pending_removes.pop(wid, set())
        adds: list[AddSpec] = []
        prefill_ids: list[str] = []
        releases: list[LiveRequest] = []
        for r, n in b.prefill:
            lr = self.live[r.request_id]
            final = r.num_computed_tokens + n >= r.prefill_target_tokens
            # Its first chunk: nothing computed yet, or only what a prefix cache holds (the core
            # counts those tokens computed; the worker's engine reuses them from its prefix store).
            if r.num_computed_tokens == 0 or lr.registered_on != wid:
                if lr.registered_on == wid:
                    removes.add(r.request_id)  # KV from before a preemption: compute it again
                elif lr.registered_on is not None:
                    self.drop(lr.registered_on, r.request_id)
                adds.append(
                    AddSpec(r.request_id, lr.prompt_ids, lr.max_tokens, lr.stop, lr.sampling, tuple(lr.generated),
                            lr.prefix_scope)
                )
                lr.registered_on, lr.backend_done, lr.hold, lr.held = wid, False, not final, None
                prefill_ids.append(r.request_id)
            elif final:
                releases.append(lr)
        cmd = StepCommand(b.batch_id, tuple(prefill_ids), tuple(r.request_id for r in b.decode), tuple(adds),
                          tuple(removes))
        return PlannedStep(wid, start_s, cmd, tuple(releases))

    async def run(self, step: PlannedStep) -> None:
        """Run the step on its worker and report the outcome to the core."""
        wid, cmd = step.worker_id, step.cmd
        reply: StepReply | None = None
        if cmd.has_work:
            self._in_step[wid] = cmd
            try:
                reply = await self.pool.step(wid, cmd)
            except StepOutOfMemory as exc:
                streak = self._oom_streak[wid] = self._oom_streak.get(wid, 0) + 1
                if streak >= MAX_OOM_STREAK:
                    self.worker_failed(wid, f"out of memory {streak} times in a row: {exc}")
                else:
                    self.feed(ev.BatchFailed(self.now_s(), wid, cmd.batch_id, f"out of memory: {exc}",
                                             out_of_memory=True))
                return
            except WorkerLost as exc:
                self.worker_failed(wid, str(exc))
                return
            except Exception as exc:
                log.exception("step on %s failed", wid)
                self.worker_failed(wid, f"step failed: {describe_error(exc)}")
                return
            finally:
                self._in_step.pop(wid, None)
            back_s = self.now_s()
            self._oom_streak.pop(wid, None)
        else:
            await asyncio.sleep(0)  # middle prefill chunks only: no compute, but never re-entrant
        if not self.is_current(wid):
            return
        if reply is not None and reply.did_compute:
            self.feed(ev.IterationTimed(back_s, wid, cmd.batch_id, step.start_s, iteration_row(reply)))
        finished: list[tuple[str, str]] = []
        for out in reply.outputs if reply is not None else ():
            lr = self.live.get(out.request_id)
            if lr is None:
                continue
            if out.error is not None:
                self._failed_here(lr, out.error)
            elif lr.hold:
                lr.held = out
            else:
                _deliver(lr, out, finished)
        for lr in step.releases:
            out, lr.held, lr.hold = lr.held, None, False
            if out is not None:
                _deliver(lr, out, finished)
        busy_s = reply.duration_s if reply is not None else 0.0
        self.feed(ev.BatchFinished(self.now_s(), wid, cmd.batch_id, 1, tuple(finished), busy_s=busy_s))

    def _failed_here(self, lr: LiveRequest, error: str) -> None:
        """The worker could not compute ``lr`` (and dropped it): fail it alone."""
        lr.backend_done = True
        lr.unregister()
        reason = f"the worker could not compute this request: {error}"
        log.warning("request %s failed on its worker: %s", lr.request.request_id, error)
        lr.resolve(lr.final("failed", reason, ReasonCode.INVALID))
        self.feed(ev.RequestFailed(self.now_s(), lr.request.request_id, reason, ReasonCode.INVALID))

    def worker_lost(self, worker_id: str, reason: str) -> None:
        """The worker failed (call before telling the core, so that it does not re-route what is
        quarantined here): each request of the step it was running gets a strike, and those
        with `QUARANTINE_AFTER` strikes are failed."""
        cmd = self._in_step.pop(worker_id, None)
        if cmd is None:
            return
        for rid in (*cmd.prefill_ids, *cmd.decode_ids):
            n = self._strikes[rid] = self._strikes.get(rid, 0) + 1
            lr = self.live.get(rid)
            if n < QUARANTINE_AFTER or lr is None or lr.result is not None:
                continue
            if self.max_retries is not None and lr.request.num_retries >= self.max_retries:
                continue  # no retry left: the core fails it itself (recorded as failed)
            why = f"quarantined: {n} workers failed while computing this request (last: {reason}); not retried"
            log.warning("request %s %s", rid, why)
            lr.resolve(lr.final("failed", why, ReasonCode.WORKER_FAILED))
            self.feed(ev.RequestFailed(self.now_s(), rid, why, ReasonCode.WORKER_FAILED))

    def drop(self, worker_id: str, request_id: str) -> None:
        """Have a live worker drop the request at its next step."""
        if self.pool.alive(worker_id):
            self._pending_removes.setdefault(worker_id, set()).add(request_id)

    def preempt(self, request_id: str) -> None:
        """The request lost its KV (`PreemptRequest`): its worker drops it; prefilled again later."""
        lr = self.live.get(request_id)
        if lr is None or lr.registered_on is None:
            return
        self.drop(lr.registered_on, request_id)
        lr.unregister()

    def release(self, lr: LiveRequest) -> None:
        """The request is answered (`FinishRequest`): whatever its worker still holds goes."""
        self._strikes.pop(lr.request.request_id, None)
        if lr.registered_on is not None and not lr.backend_done:
            self.drop(lr.registered_on, lr.request.request_id)

    def forget_worker(self, worker_id: str) -> None:
        """The worker stopped or failed: nothing is dropped there any more, nothing is held there."""
        self._pending_removes.pop(worker_id, None)
        for lr in self.live.values():
            if lr.registered_on == worker_id:
                lr.unregister()


def _deliver(lr: LiveRequest, out: TokenOut, finished: list[tuple[str, str]]) -> None:
    lr.generated.append(out.token_id)
    if out.text_delta:
        lr.text += out.text_delta
        lr.request.output_text = lr.text
        lr.push(out.text_delta)
    if out.finished:
        lr.backend_done = True
        lr.finish_reason = out.finish_reason
        lr.request.output_text = lr.text
        finished.append((out.request_id, out.finish_reason or "stop"))


def iteration_row(reply: StepReply) -> dict[str, float]:
    """The reply's profile row for `IterationTimed`, padded counts always present (a backend
    that does not pad computes exactly the real counts)."""
    row: dict[str, float] = dict(reply.profile)
    row.setdefault("padded_prefill_tokens", row.get("num_prefill_tokens", 0))
    row.setdefault("padded_decode_context", row.get("sum_decode_context", 0))
    return row
