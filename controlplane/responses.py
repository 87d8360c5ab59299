"""The core's responses: a generated answer may be checked by a guardian (the reply waits for a
sync check; an async one runs beside it) before the reply, and only answers that passed reach the
response caches; a cached answer is served instead of a generation. A mixin of
`controlplane.core.ControlPlane`, which owns the state these methods use."""

from __future__ import annotations

from typing import Any

from controlplane import actions as act
from controlplane import events as ev
from controlplane.types import Request, RequestStatus

__all__ = ["Responses"]


class Responses:
    """Completed generations and cache hits in, replies (and cache entries) out."""

    guardian_pending: dict[str, Request]  # sync checks: the reply waits for them
    _unverified: dict[str, Request]  # answered, async check pending: not cacheable yet
    _out: list[Any]

    def _serve_from_cache(self, r: Request, hit: Any, plugin: str | None) -> None:
        now = self.clock.now_s
        r.cache_hit = hit.kind
        r.scheduled_s = now
        r.first_token_s = r.finish_s = now + hit.latency_s
        tokens = hit.output_tokens if hit.output_tokens is not None else r.max_output_tokens
        r.output_tokens = max(0, min(int(tokens), r.max_output_tokens))
        r.output_text = hit.response_text
        self._decision("cp_cache_lookup", plugin, "cache_hit", r.request_id, hit.reason,
                       {"kind": hit.kind, "similarity": hit.similarity})
        self._finish(r, RequestStatus.COMPLETED, finish_s=r.finish_s)

    def _complete(self, r: Request) -> None:
        """A worker produced the last token; a guardian may check it before the reply."""
        plan, plugin = self._decide("cp_guardian_plan", r)
        if plan is not None and plan.check:
            self._decision("cp_guardian_plan", plugin, "guardian_check", r.request_id, plan.reason,
                           {"guardian": plan.guardian, "mode": plan.mode})
            self._out.append(act.RunGuardian(r, plan.guardian, plan.mode))
            if plan.mode == "sync":
                r.finish_s = None
                self.guardian_pending[r.request_id] = r
                return
            # Async: the reply goes now; the caches get the response only once it passed.
            self._unverified[r.request_id] = r
            self._finish(r, RequestStatus.COMPLETED)
            return
        self.calls.call_observer(self.calls.cache_store, r)
        self._finish(r, RequestStatus.COMPLETED)

    def _on_guardian_finished(self, e: ev.GuardianFinished) -> None:
        r = self.guardian_pending.pop(e.request_id, None)
        if r is None:  # an async check of a request already answered
            self._decision("cp_guardian_plan", "core", "guardian_verdict", e.request_id, e.verdict)
            answered = self._unverified.pop(e.request_id, None)
            if answered is not None and e.verdict == "pass":
                answered.guardian_verdict = e.verdict
                self.calls.call_observer(self.calls.cache_store, answered)
            return
        r.guardian_verdict = e.verdict
        if e.verdict == "block":
            r.reason = "blocked by guardian"
            self._finish(r, RequestStatus.COMPLETED)
            return
        self.calls.call_observer(self.calls.cache_store, r)
        self._finish(r, RequestStatus.COMPLETED)
