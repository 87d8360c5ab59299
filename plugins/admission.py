"""Admission: cap the queue so overload sheds requests with a reason instead of growing forever."""

from __future__ import annotations

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import Admission
from controlplane.types import ReasonCode


class QueueLimit(Plugin):
    """Admit requests until the model's queued requests reach a limit (no limit by default)."""

    name = "queue-limit"

    class Settings(PluginSettings):
        max_queued: int | None = Field(None, ge=0)  # waiting requests per model, all replicas
        max_queued_per_replica: int | None = Field(None, ge=0)
        max_prompt_tokens: int | None = Field(None, ge=1)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        s = self.settings
        if s.max_prompt_tokens is None and s.max_queued is None and s.max_queued_per_replica is None:
            self.withdraw("cp_admit_request")  # no limit: it would defer every request

    @hookimpl
    def cp_admit_request(self, ctx, request):
        s = self.settings
        if s.max_prompt_tokens is not None and request.prompt_tokens > s.max_prompt_tokens:
            return Admission(False, f"prompt too long: {request.prompt_tokens} > {s.max_prompt_tokens} tokens",
                             code=ReasonCode.TOO_LONG)
        if s.max_queued is None and s.max_queued_per_replica is None:
            return None  # no limit: the next admission policy decides
        workers = [w for w in ctx.workers.values() if w.model == request.model and w.accepts_requests]
        queued = sum(len(w.waiting) for w in workers)
        limits = [x for x in (s.max_queued,) if x is not None]
        if s.max_queued_per_replica is not None:
            limits.append(s.max_queued_per_replica * max(1, len(workers)))
        limit = min(limits)
        if queued >= limit:
            return Admission(False, f"queue full: {queued} waiting >= limit {limit}", code=ReasonCode.QUEUE_FULL)
        return None  # within the limit: defer, so admission policies listed after this one still decide
