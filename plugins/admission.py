"""Admission: cap the queue so overload sheds requests with a reason instead of growing forever.

``max_finish_s`` bounds the admitted work by time rather than by count: a request predicted to
finish later than that after it arrives (`plugins.finish_time`) is refused at once, with a
``retry_after_s`` of the predicted excess. The daemon sets it from ``--request-timeout``, so under
overload the requests it admits finish and the others get HTTP 429 instead of all of them a 504.
When some replicas are predicted to finish a request within the limit and others are not, the request
is admitted for those replicas: the configured router chooses as usual, and where it picks one predicted
late, the request goes to the on-time replica predicted to finish it soonest (the route decision's reason
says so). Without this, the router (by queued tokens, say) sent admitted requests to replicas the
prediction had ruled out, and they finished late.
A request's output length is expected from the model's finished answers (`plugins.output_lengths`,
settings ``output_quantile``, ``output_window``, ``output_min_finished``), not its ``max_tokens``;
an iteration time (or prefill time per prompt token) not updated for ``iteration_horizon_s`` is forgotten.
Before any iteration was timed (a cold start), a replica takes its free batch slots and
``untimed_waiting_per_slot`` waiting requests per slot, and refuses more. Requests admitted and not routed yet (a
sync guardian checking their prompts holds them; they are routed after its verdict, not asked again) count against
those places as the waiting ones do, and keep the model's replicas from counting as idle: before, a burst held by
its prompt checks found the places all free and was admitted past them (27 of 40 on one loading replica of 8 slots,
16 expected).
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission
from controlplane.events import IterationTimed, RequestFinished, WorkerChanged
from controlplane.types import ReasonCode
from plugins.finish_time import FinishTimes
from plugins.output_lengths import OutputLengths


class QueueLimit(Plugin):
    """Admit requests until the model's queued requests reach a limit (no limit by default)."""

    name = "queue-limit"

    class Settings(PluginSettings):
        max_queued: int | None = Field(None, ge=0)  # waiting requests per model, all replicas
        max_queued_per_replica: int | None = Field(None, ge=0)
        max_prompt_tokens: int | None = Field(None, ge=1)
        # refuse a request predicted to finish later than this after its arrival (plugins.finish_time)
        max_finish_s: float | None = Field(None, gt=0)
        # the output length max_finish_s predicts for a request (plugins.output_lengths): at most its
        # max_tokens, the output_quantile of the model's last output_window finished answers once at
        # least output_min_finished finished (before that, its max_tokens)
        output_quantile: float = Field(0.9, gt=0, le=1)
        output_window: int = Field(256, ge=1)
        output_min_finished: int = Field(20, ge=1)
        # an iteration or prefill time not updated for this long (run time) is forgotten (plugins.finish_time)
        iteration_horizon_s: float = Field(60.0, gt=0)
        # before any iteration of the model was timed (a cold start: until a replica has run), a replica whose batch
        # slots are all taken still takes this many waiting requests per batch slot (max_num_seqs; 0: none)
        untimed_waiting_per_slot: float = Field(1.0, ge=0)

        @model_validator(mode="after")
        def _min_within_window(self):
            if self.output_min_finished > self.output_window:
                raise ValueError(f"output_min_finished ({self.output_min_finished}) must be at most "
                                 f"output_window ({self.output_window})")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        s = self.settings
        limits = (s.max_prompt_tokens, s.max_queued, s.max_queued_per_replica, s.max_finish_s)
        if all(x is None for x in limits):
            self.withdraw("cp_admit_request")  # no limit: it would defer every request
        if s.max_finish_s is None:
            self.withdraw("cp_route_request")  # no replica is ever ruled out
        # request id -> the replicas predicted to finish it within max_finish_s, soonest first, where
        # others are not (until it is routed or finishes)
        self._on_time: dict[str, tuple[str, ...]] = {}
        # model -> the requests admitted and not routed yet (held by their prompt's sync check), until they are
        self._unrouted: dict[str, set[str]] = {}
        self._finish = FinishTimes(OutputLengths(s.output_window, s.output_quantile, s.output_min_finished),
                                   s.iteration_horizon_s)
        if s.max_finish_s is None:
            self.withdraw("cp_on_event")  # no iteration times or output lengths kept

    @hookimpl
    def cp_admit_request(self, ctx, request):
        s = self.settings
        if s.max_prompt_tokens is not None and request.prompt_tokens > s.max_prompt_tokens:
            return Admission(False, f"prompt too long: {request.prompt_tokens} > {s.max_prompt_tokens} tokens",
                             code=ReasonCode.TOO_LONG)
        workers = [w for w in ctx.workers.values() if w.model == request.model and w.accepts_requests]
        if s.max_finish_s is not None and workers:
            late = self._too_late(ctx, workers, request)
            if late is not None:
                return late
        if s.max_queued is not None or s.max_queued_per_replica is not None:
            queued = sum(len(w.waiting) for w in workers)
            limits = [x for x in (s.max_queued,) if x is not None]
            if s.max_queued_per_replica is not None:
                limits.append(s.max_queued_per_replica * max(1, len(workers)))
            limit = min(limits)
            if queued >= limit:
                return Admission(False, f"queue full: {queued} waiting >= limit {limit}", code=ReasonCode.QUEUE_FULL)
        if s.max_finish_s is not None and workers:  # counted against the places until it is routed
            self._unrouted.setdefault(request.model, set()).add(request.request_id)
        return None  # within the limits: defer, so admission policies listed after this one still decide

    def _too_late(self, ctx, workers, request) -> Admission | None:
        """The refusal of a request no replica is predicted to finish within ``max_finish_s`` (None:
        one is, one is idle, or no iteration was timed yet and one has a free batch slot or a free place of
        the ``untimed_waiting_per_slot`` it may hold waiting)."""
        s = self.settings
        limit = s.max_finish_s
        predictions = self._finish.predict(workers, request, ctx.now_s, ctx)  # (as of now: ctx's progress)
        known = [p for p in predictions if p.finish_s is not None]
        # (untimed: the places each replica has left for waiting requests, beyond its free batch slots; the
        # requests admitted and not routed yet take places too, wherever they go)
        per_slot = s.untimed_waiting_per_slot
        room = {w.worker_id: int(per_slot * w.max_num_seqs) + max(0, w.max_num_seqs - len(w.running)) - len(w.waiting)
                for w in workers}
        unrouted = len(self._unrouted.get(request.model, ()))
        spare = sum(max(0, room[p.worker_id]) for p in predictions if p.finish_s is None) - unrouted
        on_time = [p for p in predictions if (p.idle and not unrouted) or (
            p.finish_s <= limit if p.finish_s is not None else spare > 0 and (not p.waits or room[p.worker_id] > 0))]
        if on_time:
            if len(on_time) < len(predictions):
                on_time.sort(key=lambda p: (not p.idle, p.finish_s if p.finish_s is not None else 0.0))
                self._on_time[request.request_id] = tuple(p.worker_id for p in on_time)
            return None
        if not known:
            most = max(len(w.waiting) for w in workers)
            held = f", and {unrouted} admitted are not routed yet (their prompts' checks hold them)" if unrouted else ""
            return Admission(False, f"overloaded: every batch slot is taken and no iteration was timed yet to "
                                    f"predict a finish within {limit:g} s; each replica already holds the waiting "
                                    f"requests untimed_waiting_per_slot {per_slot:g} allows "
                                    f"until then (up to {most} waiting{held})", code=ReasonCode.ADMISSION_DENIED)
        best = min(known, key=lambda p: p.finish_s)
        tokens = f"{best.tokens} tokens"
        if best.tokens < request.max_output_tokens:  # the length the run's answers suggest
            tokens = f"{best.tokens} of max_tokens {request.max_output_tokens} expected"
        prompts = ""
        if best.prefill_token_s is not None and best.prefill_tokens:  # prefill priced (plugins.finish_time)
            prompts = f", {best.prefill_tokens} prompt tokens at {best.prefill_token_s * 1e6:.0f} us each"
        return Admission(
            False, f"overloaded: predicted to finish in {best.finish_s:.1f} s > max_finish_s {limit:g} s "
                   f"({tokens} at {best.token_s * 1000:.0f} ms per iteration{prompts} on {best.worker_id}"
                   f"{', after the work queued ahead' if best.waits else ''})",
            code=ReasonCode.ADMISSION_DENIED, retry_after_s=best.finish_s - limit)

    @hookimpl(wrapper=True)
    def cp_route_request(self, ctx, request, workers):
        """The router's choice, unless it is a replica predicted to finish the request late while
        another is predicted in time (`_too_late`): then the on-time one predicted soonest."""
        decision = yield
        if self._unrouted:
            self._routed(request)
        on_time = self._on_time.pop(request.request_id, None) if self._on_time else None
        if decision is None or on_time is None or decision.worker_id in on_time:
            return decision
        candidates = {w.worker_id for w in workers}
        chosen = next((wid for wid in on_time if wid in candidates), None)
        if chosen is None:  # the on-time replicas stopped accepting since: the router's choice stands
            return decision
        return replace(decision, worker_id=chosen,
                       reason=f"{decision.reason + ' | ' if decision.reason else ''}queue-limit: "
                              f"{decision.worker_id} predicted to finish it after max_finish_s "
                              f"{self.settings.max_finish_s:g} s, {chosen} within it")

    def _routed(self, request) -> None:
        """``request`` no longer waits to be routed (it was, or it finished before: refused, blocked, served
        from a cache, cancelled)."""
        unrouted = self._unrouted.get(request.model)
        if unrouted is not None:
            unrouted.discard(request.request_id)
            if not unrouted:
                del self._unrouted[request.model]

    @hookimpl
    def cp_on_event(self, ctx, event):
        kind = type(event)
        if kind is IterationTimed:  # live: every iteration, so a lone request is timed too
            w = ctx.workers.get(event.worker_id)
            if w is not None:  # at the iteration's start: the tokens it made are not counted yet
                self._finish.iteration_row(w.model, event.row, event.start_s)
                self._finish.look(w, event.start_s)
            return
        # Iterations are timed as requests finish, not only as they arrive; not as batches start: the simulator's
        # exact mode starts a batch every iteration, its fast mode one every many, so the looks and the times they
        # measure would depend on the mode (a live run looks every iteration anyway, above).
        if kind is RequestFinished:
            if self._on_time:  # admitted, then refused, blocked or served from a cache: never routed
                self._on_time.pop(event.request.request_id, None)
            if self._unrouted:
                self._routed(event.request)
            self._finish.lengths.finished(event.request)
            self._finish.finished(event.request)  # (the prompt tokens it prefilled since the last look)
            wid = event.request.worker_id
            w = ctx.workers.get(wid) if wid is not None else None
            if w is not None:
                self._finish.look(w, ctx.now_s, ctx.request_progress(w), ctx)
        elif kind is WorkerChanged and event.kind in ("failed", "stopped"):
            self._finish.forget(event.worker_id)
