"""A live request refused before it reaches the core, for a reason the core refuses it in a replay, is recorded
as the simulator records it.

The daemon and `LiveDriver.submit` check a request before it reaches the core: its model, its length, whether its
model will ever be served. The core makes the same checks at a request's arrival, before any policy sees it
(``unknown_model``; ``too_long``: prompt + ``max_tokens`` over the deployment's ``max_model_len``, which the
driver sets to the length it serves; ``unavailable``: a model no worker will ever serve), and in a replay such a
request is a ``rejected`` row with that code. Refused at the edge, it had no row, was not counted in
``controlplane_requests_total`` or the run's ``num_rejected``, and its error had no ``x-request-id``.

`record_refusal` is the one path for all of them: it hands the request to the core (its ``RequestArrived``), the
core rejects it there and then with its code (its row, metrics and decision), and the error to answer gets the
request's ``x-request-id``; the daemon's journal (`controlplane.storage.journal`) notes it accepted and answered
``rejected``, as every request with a row. A refusal with another code (a protocol error: malformed JSON, a missing
field, a wrong type, an unsupported option, token ids outside the vocabulary: ``invalid``) is no request the core
would see, and stays unrecorded. A driver that takes no requests now (not started, closed, draining) records nothing.

The request's ``prompt_tokens`` is what the refusal counted (a prompt over the context), else what the caller
counted (the daemon tokenizes the prompt of a ``max_tokens`` over the context, whose reason, the core's, states the
prompt's length: its longest prompt, a chat's rendered messages), else the count of the token ids sent, else 0
(stored as 1, as the core stores any empty prompt): a text prompt is not tokenized for a refusal that does not
state its length (an unknown model has no tokenizer of its own). One row per call: an HTTP request with several
prompts or ``n`` > 1 is one row, refused as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from controlplane import events as ev
from controlplane.live.http_errors import InvalidRequest
from controlplane.types import ReasonCode, Request, RequestStatus

log = logging.getLogger(__name__)

__all__ = ["RECORDED_CODES", "is_recorded", "record_refusal"]

#: The codes of the refusals the core makes itself at a request's arrival, which the edge repeats. The core refuses
#: a request with one of them again when it is handed over (`LiveDriver` aligns each deployment's ``max_model_len``
#: with its served length; the never-served check is the core's own `never_served`).
RECORDED_CODES = frozenset({ReasonCode.UNKNOWN_MODEL, ReasonCode.TOO_LONG, ReasonCode.UNAVAILABLE})


def _code(error: Any) -> ReasonCode | None:
    code = getattr(error, "code", None)
    try:
        return ReasonCode(code.value if isinstance(code, ReasonCode) else code)
    except ValueError:
        return None


def is_recorded(error: Any) -> bool:
    """Whether ``error`` (a `RequestError` or the daemon's `APIError`) is a refusal the core would make, not yet
    recorded (it has no ``x-request-id``)."""
    headers = getattr(error, "headers", None) or {}
    return _code(error) in RECORDED_CODES and "x-request-id" not in headers


def record_refusal(driver: Any, error: Any, *, model: str | None, prompt: Any = None, max_tokens: int | None = None,
                   tenant: str | None = None, priority: int = 0, request_id: str | None = None,
                   prompt_tokens: int | None = None) -> Any:
    """Record the request ``error`` refuses (see `is_recorded`) as the core's ``rejected`` row, and return
    ``error`` carrying its ``x-request-id`` (in its ``headers``) and the rejected `Request` (its ``recorded``);
    any other error, or one while ``driver`` takes no requests, as it is.
    ``prompt_tokens``: the prompt's tokens as the caller counted them, where ``error`` did not."""
    if not is_recorded(error) or not driver._started or driver._closed or driver._finished or driver.draining:
        return error
    if request_id is not None and request_id in driver._live:
        raise InvalidRequest(f"request id {request_id!r} is in flight already", param="request_id")
    rid = request_id if request_id is not None else f"req-{driver.core.ctx.ids.next('live-request')}"
    counted = getattr(error, "prompt_tokens", None)
    counted = counted if counted is not None else prompt_tokens
    ids = prompt if isinstance(prompt, Sequence) and not isinstance(prompt, str) else ()
    now = driver.now_s()
    request = Request(request_id=rid, arrival_s=now, prompt_tokens=counted if counted is not None else len(ids),
                      max_output_tokens=max(1, max_tokens or 1), model=model, tenant=tenant, priority=priority)
    journal = getattr(driver, "journal", None)  # (the daemon's: a request with a row and an x-request-id is accepted)
    if journal is not None:
        journal.accepted(rid)
    driver._feed(ev.RequestArrived(now, request))  # the core rejects it there and then: its row and metrics
    if request.status is not RequestStatus.REJECTED:  # (cannot happen: the core makes every check in RECORDED_CODES)
        log.error("request %s refused at the edge (%s) was not rejected by the core: %s", rid, _code(error), error)
    if journal is not None:  # and answered now: a crash before its row is written lists it as answered, not lost
        journal.answered(rid, "rejected")
    error.headers = {**(getattr(error, "headers", None) or {}), "x-request-id": rid}
    error.recorded = request  # (the daemon's error body carries its `controlplane` object, as a response does)
    return error
