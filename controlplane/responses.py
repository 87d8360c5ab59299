"""The core's responses: guardian checks of a prompt (stage "input", before generation) and of an
answer ("output", before or beside the reply), cache hits, and what reaches the response caches.
A mixin of `controlplane.core.ControlPlane`, which owns the state these methods use.

* A plan (``cp_guardian_plan``) names guardians run in parallel on one request; the driver runs
  each (`RunGuardian`) and reports `GuardianFinished`; verdicts combine by the plan's rule
  (`controlplane.guardian_checks`). A cascade's next tier runs when the first tier's score
  reaches the plan's ``then_above``; the last tier's verdict decides.
* Sync: the request waits. A blocked prompt never reaches a worker (status ``blocked``, code
  ``BLOCKED``); a blocked answer is withheld (status ``blocked``, no code: the daemon answers
  ``finish_reason: "content_filter"``). Blocked requests are not goodput.
* A reply not held (no enabled planner may check answers synchronously,
  `guardian_checks.holds_answers`) went out as it was generated: an answer's sync plan runs async
  there and a known (cached) verdict comes after the reply, so a block is one after the reply, never
  a withheld answer the client already has.
* Async: the generation or reply goes on; the request's row says ``pending``; a later block is
  recorded as a ``guardian_block_after_reply`` decision (the API's retraction convention), and
  every final verdict after the reply goes to the row (`controlplane.verdict_after_reply`). A
  prompt block that arrives while the request is still in the system stops it the way a
  cancellation does (at once, or at its running batch's next boundary): status ``blocked``, code
  ``BLOCKED``, the reason naming the guardian.
* Only answers that passed reach the response caches, so nothing unchecked or blocked is served
  from them; a cached answer is served instead of a generation only after the prompt's sync
  check passed.
"""

from __future__ import annotations

from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.decisions import GuardianPlan
from controlplane.guardian_checks import CheckGroup, Outcome, combine, holds_answers, outcome_payload
from controlplane.types import ReasonCode, Request, RequestStatus
from controlplane.verdict_after_reply import VerdictAfterReply

__all__ = ["MAX_BLOCKED_PROMPTS", "Responses"]

_BLOCKED, _COMPLETED = RequestStatus.BLOCKED, RequestStatus.COMPLETED  # as globals: cheaper than the enum's attributes

#: Prompts whose answer a guardian blocked, remembered so no cache serves an answer to them.
MAX_BLOCKED_PROMPTS = 100_000


class Responses:
    """Completed generations and cache hits in, replies (and cache entries) out."""

    guardian_pending: dict[str, Request]  # sync checks: the request waits for them
    _unverified: dict[str, Request]  # answered, async check pending: not cacheable yet
    _checks: dict[tuple[str, str], CheckGroup]  # (request id, stage) -> the guardians asked
    _blocked_answers: dict[tuple[str | None, str], None]  # (model, prompt) blocked, oldest first
    _cancelling: dict[str, tuple[str, ReasonCode | None]]  # leaving at their batch's next boundary
    _out: list[Any]
    #: Blocks after the reply that no guardian pool delivered (a known verdict, `_start_checks`); the
    #: pools count theirs, and add these to the summary's ``guardian_blocks_after_reply``.
    known_blocks_after_reply: int = 0

    # --- arrivals: the prompt's check, then the cache or a worker --------------------------------

    def _admitted(self, r: Request) -> None:
        """An admitted request: check its prompt if a plan says so, then serve or route it."""
        stores = self.__dict__.get("_outage_stores")
        if stores is None or stores[0] is not self.plugins:
            self._find_outage_stores()  # (before the plan: a guardian planner's verdict store may fail there)
        plan, plugin = (None, None) if "cp_guardian_plan" in self.calls.unanswered else \
            self._decide("cp_guardian_plan", r, "input")
        if plan is not None and self._start_checks(r, "input", plan, plugin) == "sync":
            return  # it waits for the verdict
        if r.status is _BLOCKED:
            return  # a cached block
        self._lookup_or_route(r)

    def _lookup_or_route(self, r: Request) -> None:
        hit, plugin = (None, None) if "cp_cache_lookup" in self.calls.unanswered else self._decide("cp_cache_lookup", r)
        stores = self.__dict__.get("_outage_stores")
        if stores is None or stores[0] is not self.plugins:
            stores = self._find_outage_stores()
        if stores[1]:
            self._record_store_outages(stores[1])
        if hit is not None:
            if hit.response_text is None and self.ctx.run.mode == "live":
                self._textless_hit(plugin, r.request_id)  # the plugin's error: the request is served as a miss
            elif r.prompt is not None and (r.model, r.prompt) in self._blocked_answers:
                # An answer to this prompt was blocked: whatever a cache kept for it (stored unchecked,
                # before the block) is not served; it is generated and checked again.
                self._decision("cp_cache_lookup", "core", "cache_hit_refused", r.request_id,
                               "an answer to this prompt was blocked by a guardian", {"kind": hit.kind})
            else:
                self._serve_from_cache(r, hit, plugin)
                return
        self._route(r)

    def _find_outage_stores(self) -> tuple[Any, tuple[tuple[str, Any], ...]]:
        """The plugins' stores that can be unreachable (``store`` / ``_store`` with ``reports_outages``: a Redis
        cache), by plugin name, for this plugin set (a reload swaps it)."""
        found = []
        for p in self.plugins.loaded:
            for attr in ("store", "_store"):
                store = getattr(p.instance, attr, None)
                if getattr(store, "reports_outages", False) is True:
                    found.append((p.info.name, store))
                    if callable(getattr(store, "outage_totals", None)):  # its outages go to the run summary
                        self.stats.cache_stores[id(store)] = store
        stores = self.__dict__["_outage_stores"] = (self.plugins, tuple(found))
        return stores

    def _record_store_outages(self, stores: tuple[tuple[str, Any], ...]) -> None:
        """Each outage of a plugin's store begun or ended since the last lookup, as a decision (subject: the
        plugin): ``cache_store_down`` with why, ``cache_store_up`` when it answers again."""
        for plugin, store in stores:
            for _at, down, why in store.take_outages():
                self._decision("cp_cache_lookup", plugin, "cache_store_down" if down else "cache_store_up", plugin,
                               why, {"url": getattr(store, "_shown_url", None)})

    def _textless_hit(self, plugin: str | None, request_id: str) -> None:
        """A live cache hit without ``response_text`` has nothing to answer with (an empty reply would be
        served as the answer): it is recorded as the plugin's error, and the request is generated. A
        simulation needs no text (its hits are counted and timed), so there a hit without it is fine."""
        self._monitor.record(plugin or "unknown", "cp_cache_lookup", ValueError(
            "CacheHit.response_text is None in a live run, where the hit's text is the reply: return the cached "
            "answer's text (the built-in caches store request.output_text), or None for a miss"), request_id)
        self.calls.drain_errors()

    def _serve_from_cache(self, r: Request, hit: Any, plugin: str | None) -> None:
        now = self.clock.now_s
        r.cache_hit = hit.kind
        r.reason = hit.reason
        r.scheduled_s = now
        # A simulation charges the plugin's stated latency; a live run the time the lookup really took
        # (the driver's clock read now that the plugin answered: the reply goes out at once).
        answered_s = self.clock.read() if self.clock.read is not None else None
        r.first_token_s = r.finish_s = now + hit.latency_s if answered_s is None else max(now, answered_s)
        tokens = hit.output_tokens if hit.output_tokens is not None else r.max_output_tokens
        r.output_tokens = max(0, min(int(tokens), r.max_output_tokens))
        r.output_text = hit.response_text
        self._decision("cp_cache_lookup", plugin, "cache_hit", r.request_id, hit.reason,
                       {"kind": hit.kind, "similarity": hit.similarity})
        self._finish(r, RequestStatus.COMPLETED, finish_s=r.finish_s)

    # --- completions: the answer's check, then the reply ------------------------------------------

    def _complete(self, r: Request) -> None:
        """A worker produced the last token; guardians may check it before the reply."""
        if r.guardian_verdict == "block":  # an async prompt check blocked it during this last iteration
            # Its leave waited for this batch's end (`_decided`); the worker's stop reason replaced r.reason.
            leaving = self._cancelling.get(r.request_id)
            self._block(r, "input", leaving[0] if leaving else "blocked by an async prompt check")
            return
        if self._answers_held():  # its reply waited for this plan (live: a stream sent nothing yet)
            r.reply_held = True
        plan, plugin = (None, None) if "cp_guardian_plan" in self.calls.unanswered else \
            self._decide("cp_guardian_plan", r, "output")
        # no plan: no checks; a reply not held went out as it was generated (a stream's text is the client's)
        mode = None if plan is None else self._start_checks(r, "output", plan, plugin, held=r.reply_held)
        if mode == "sync" or mode == "answered" or r.status is _BLOCKED:
            return
        if mode == "async":  # the reply goes now; the caches get the answer only once it passed
            self._unverified[r.request_id] = r
            r.guardian_verdict = "pending"
            self._finish(r, _COMPLETED)
            return
        self.calls.call_observer(self.calls.cache_store, r)  # checked and passed, or not checked
        self._finish(r, _COMPLETED)

    def _answers_held(self) -> bool:
        """Whether every answer's reply waits for its guardian plan, under this plugin set (a reload
        swaps it): `guardian_checks.holds_answers`, the daemon's rule for holding streams."""
        held = self.__dict__.get("_held_by")
        if held is None or held[0] is not self.plugins:
            held = self.__dict__["_held_by"] = (self.plugins, "cp_guardian_plan" not in self.calls.unanswered
                                                and holds_answers(self.plugins))
        return held[1]

    # --- checks ------------------------------------------------------------------------------------

    def _start_checks(self, r: Request, stage: str, plan: GuardianPlan | None, plugin: str | None,
                      held: bool = True) -> str | None:
        """Start the checks ``plan`` asks for; returns their mode, None when nothing runs, or "answered"
        when the request was answered here (a known verdict after a reply not held).

        ``held`` False (an answer whose reply was not held, `_answers_held`: live, a stream sent its
        text as it came) makes the answer's check come after the reply, whatever the plan's mode: a
        sync plan runs as async, and a cached verdict is applied after the reply, so a block is a
        block after the reply (retracted, `guardian_blocks_after_reply`), never a withheld answer
        (before, a planner whose settings said async but whose plan said sync recorded an answer
        its client had whole as ``blocked``, withheld)."""
        if plan is None:
            return None
        if not plan.check:
            if plan.extra.get("backoff"):
                self._decision("cp_guardian_plan", plugin, "guardian_backoff", r.request_id, plan.reason,
                               {"stage": stage, **{k: v for k, v in plan.extra.items() if k != "backoff"}})
            return None
        if plan.cached is not None:
            c = plan.cached
            out = Outcome(c.get("verdict", "pass"), c.get("guardian", plan.guardian), c.get("score"),
                          c.get("reason") or "cached verdict")
            stage = c.get("stage", stage)  # a known blocked answer is an output block, before generation
            self._decision("cp_guardian_plan", plugin, "guardian_cached", r.request_id, plan.reason,
                           {"stage": stage, "guardian": out.guardian, "verdict": out.verdict, "score": out.score,
                            **({} if held else {"after_reply": True})})
            if not held:  # the reply went out: answered as an async check's, then the verdict, after it
                self._unverified[r.request_id] = r
                r.guardian_verdict = "pending"
                self._finish(r, _COMPLETED)
                self._decided(r, stage, "async", out)
                if r.guardian_verdict == "block":  # no guardian pool delivered it: counted here
                    self.known_blocks_after_reply += 1
                return "answered"
            self._decided(r, stage, "sync", out)
            return None
        names = plan.names
        if not names:
            self._decision("cp_guardian_plan", plugin, "error", r.request_id, "a check with no guardian named")
            return None
        mode, reason, asked = plan.mode, plan.reason, {}
        if mode == "sync" and not held:
            mode, asked = "async", {"asked_mode": "sync"}
            reason = f"{reason}; checked after the reply: its reply was not held (no sync answer checks declared)"
            self._warn_unheld(plugin)
        self._decision("cp_guardian_plan", plugin, "guardian_check", r.request_id, reason,
                       {"guardian": ",".join(names), "mode": mode, "stage": stage, **asked})
        self._run_group(CheckGroup(r, stage, mode, plan, set(names)))
        if mode == "sync":
            r.finish_s = None
            self.guardian_pending[r.request_id] = r
        return mode

    def _warn_unheld(self, plugin: str | None) -> None:
        """Warn once per plugin of a sync answer plan whose reply was not held (it runs async)."""
        warned = self.__dict__.setdefault("_warned_unheld", set())
        if plugin in warned:
            return
        warned.add(plugin)
        import logging

        logging.getLogger(__name__).warning(
            "%s planned a sync check of an answer whose reply was not held (no enabled planner declares sync answer "
            "checks: set sync_answer_checks = True on it, or mode: sync with the output stage in its settings); "
            "such checks run after the reply, their blocks retract it (docs/guardians.md)", plugin)

    def _drop_checks(self, request_id: str) -> None:
        """The request left (cancelled, failed): verdicts still to come change nothing."""
        self._checks.pop((request_id, "input"), None)
        self._checks.pop((request_id, "output"), None)

    def _run_group(self, group: CheckGroup) -> None:
        self._checks[(group.request.request_id, group.stage)] = group
        for name in sorted(group.pending):
            key = f"guardian_inflight:{name}"
            self.gauges[key] = self.gauges.get(key, 0) + 1
            self._out.append(act.RunGuardian(group.request, name, group.mode, group.stage))

    def _on_guardian_finished(self, e: ev.GuardianFinished) -> None:
        stage = e.stage
        group = self._checks.get((e.request_id, stage))
        guardian = e.guardian
        if group is not None and guardian is None and len(group.pending) == 1:
            guardian = next(iter(group.pending))
        if guardian is not None:
            key = f"guardian_inflight:{guardian}"
            if self.gauges.get(key, 0) > 0:
                self.gauges[key] -= 1
        self._decision("cp_guardian_plan", guardian, "guardian_verdict", e.request_id, e.reason or e.verdict,
                       {"guardian": guardian, "verdict": e.verdict, "score": e.score, "stage": stage})
        if group is None or guardian not in group.pending:
            return  # a check of a request that left (cancelled), or a duplicate
        if not group.add(guardian, e.verdict, e.score, e.reason):
            return
        del self._checks[(e.request_id, stage)]
        out = combine(self.config.guardians, group.plan.combine, group.in_plan_order())
        plan = group.plan
        nxt = plan.then
        escalate = nxt is not None and bool(nxt.names) and (out.verdict == "block"
                                                            or (out.score or 0.0) >= plan.then_above)
        if len(group.verdicts) > 1 or plan.then is not None or group.tier > 1:
            self._decision("cp_guardian_plan", "core", "guardian_outcome", e.request_id, out.reason,
                           {**outcome_payload(group, out), "final": not escalate})
        if escalate:
            self._decision("cp_guardian_plan", "core", "guardian_escalate", e.request_id,
                           f"tier {group.tier} score {out.score} >= {plan.then_above} or blocked",
                           {"to": ",".join(nxt.names), "stage": stage})
            self._run_group(CheckGroup(group.request, stage, group.mode, nxt, set(nxt.names), tier=group.tier + 1))
            return
        self._decided(group.request, stage, group.mode, out)

    def _decided(self, r: Request, stage: str, mode: str, out: Outcome) -> None:
        """Apply a final verdict to the request (waiting, still generating, or answered)."""
        waiting = self.guardian_pending.pop(r.request_id, None) is not None
        if mode == "async" and not waiting:
            answered = self._unverified.pop(r.request_id, None)
            if stage == "output" or r.status is RequestStatus.COMPLETED:
                if r.guardian_verdict == "block":
                    return  # the other stage's check blocked it after the reply: that stands
                r.guardian_verdict = out.verdict
                if answered is not None and out.verdict == "pass":
                    self.calls.call_observer(self.calls.cache_store, answered)
                elif out.verdict == "block":
                    self._remember_block(r)
                    self._decision("cp_guardian_plan", "core", "guardian_block_after_reply", r.request_id,
                                   out.reason, {"guardian": out.guardian, "score": out.score, "stage": stage})
                # For the request's row, written already (`controlplane.verdict_after_reply`).
                self._emit(VerdictAfterReply(self.clock.now_s, r.request_id, out.verdict, out.guardian, out.reason,
                                             stage))
                return
            # An async prompt check: the request is still in the system. A block stops its
            # generation: it leaves now, or at its running batch's next boundary, as blocked.
            if r.request_id in self.active:
                r.guardian_verdict = out.verdict
                if out.verdict == "block":
                    r.reason = f"blocked by {out.guardian}: {out.reason}"
                    self._leave(r.request_id, r.reason, ReasonCode.BLOCKED)
            return
        r.guardian_verdict = out.verdict
        if out.verdict == "block":
            r.reason = f"blocked by {out.guardian}: {out.reason}"
            self._block(r, stage, r.reason)
            return
        if not waiting:
            return  # a cached pass at planning time: the caller goes on
        if stage == "input":
            self._lookup_or_route(r)
            return
        self.calls.call_observer(self.calls.cache_store, r)
        self._finish(r, RequestStatus.COMPLETED)

    def _remember_block(self, r: Request) -> None:
        if r.prompt is None:
            return
        blocked = self._blocked_answers
        blocked[(r.model, r.prompt)] = None
        if len(blocked) > MAX_BLOCKED_PROMPTS:
            del blocked[next(iter(blocked))]  # the oldest

    def _block(self, r: Request, stage: str, reason: str) -> None:
        self._remember_block(r)
        r.reason = reason
        if stage == "input":
            r.reason_code = ReasonCode.BLOCKED  # refused: the client must change the prompt
        self._finish(r, RequestStatus.BLOCKED)
