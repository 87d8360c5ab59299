"""A live request for a model no deployment serves is recorded, as the simulator records it.

The simulator's core rejects a trace row whose model no deployment serves (``reason_code`` ``unknown_model``,
counted under the name it asked for: docs/simulator.md). The daemon answered such a request 404 before the core
saw it: no request row, nothing in ``controlplane_requests_total``, no ``x-request-id``. `refuse_unknown_model`
hands it to the core the same way (its ``RequestArrived``; the core rejects it at once), so that it has a
``rejected`` row with the name asked for, is counted in the metrics, and its 404 carries the request's id.

Its prompt is not tokenized (no served model's tokenizer is its own): the row's ``prompt_tokens`` is the
count of the token ids it was sent, else 0 (stored as 1, as the core stores any empty prompt). One row per
call: an HTTP request with several prompts or ``n`` > 1 is one row, refused as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane import events as ev
from controlplane.live.http_errors import InvalidRequest, ModelNotFound
from controlplane.types import Request

__all__ = ["refuse_unknown_model"]


def refuse_unknown_model(driver: Any, model: str, *, prompt: Any = None, max_tokens: int | None = None,
                         tenant: str | None = None, priority: int = 0, request_id: str | None = None) -> ModelNotFound:
    """Record a request for ``model`` (served by no deployment of ``driver``'s run) as rejected, and return the
    `ModelNotFound` (404 ``unknown_model``) to raise, with the request's ``x-request-id``. A driver that takes no
    requests now (not started, closed, draining) records nothing: the 404 as before, without an id."""
    served = ", ".join(driver.models)
    error = ModelNotFound(f"model {model!r} is not served here; served: {served}", param="model")
    # (the driver's own state, as its `submit` reads it: this is the part of `submit` for a model it lacks)
    if not driver._started or driver._closed or driver._finished or driver.draining:
        return error
    if request_id is not None and request_id in driver._live:
        raise InvalidRequest(f"request id {request_id!r} is in flight already", param="request_id")
    rid = request_id if request_id is not None else f"req-{driver.core.ctx.ids.next('live-request')}"
    ids = prompt if isinstance(prompt, Sequence) and not isinstance(prompt, str) else ()
    now = driver.now_s()
    request = Request(request_id=rid, arrival_s=now, prompt_tokens=len(ids), max_output_tokens=max(1, max_tokens or 1),
                      model=model, tenant=tenant, priority=priority)
    # (not in the daemon's journal: rejected at once, nothing is lost by a crash that would make a retry unsafe)
    driver._feed(ev.RequestArrived(now, request))  # the core rejects it there and then: its row and metrics
    error.headers = {"x-request-id": rid}
    return error
