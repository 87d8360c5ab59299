"""What the daemon's routes depend on (FastAPI ``Depends``): the app's `Daemon`, its live driver,
the admin token check; and errors as OpenAI error bodies.

A route raises `APIError` (or lets a driver's `RequestError` through); the app's exception
handlers turn both into ``{"error": {"message", "type", "param", "code"}}`` with the right status.
``code`` is the `ReasonCode` value where there is one (``unknown_model``, ``too_long``,
``queue_full``...).
"""

from __future__ import annotations

import hmac
import math
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HTTPRequest

from controlplane.live.daemon import ADMIN_TOKEN_ENV, Daemon
from controlplane.live.daemon_openai import controlplane_extension, error_body
from controlplane.live.driver import LiveDriver
from controlplane.live.http_errors import RequestError
from controlplane.live.results import LiveResult
from controlplane.types import ReasonCode

log = logging.getLogger(__name__)

__all__ = [
    "APIError",
    "DaemonDep",
    "TenantDep",
    "api_tenant",
    "DriverDep",
    "error_handlers",
    "get_daemon",
    "get_driver",
    "require_admin",
    "recorded_extension",
    "result_error",
]


class APIError(Exception):
    """An HTTP error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, extension: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.extension = extension  # the ``controlplane`` object of the recorded request(s) it answers for

    def response(self) -> JSONResponse:
        extension = self.extension if self.extension is not None else recorded_extension(self)
        return JSONResponse(error_body(self.status, self.message, param=self.param, code=self.code,
                                       extension=extension), self.status, headers=self.headers)


def recorded_extension(error: Exception) -> dict[str, Any] | None:
    """The ``controlplane`` object of the request an error refused before the core saw it, once recorded
    (`controlplane.live.core_refusals.record_refusal` sets its ``recorded``: the core's rejected request)."""
    recorded = getattr(error, "recorded", None)
    return controlplane_extension([recorded]) if recorded is not None else None


def get_daemon(request: HTTPRequest) -> Daemon:
    return request.app.state.daemon


def get_driver(daemon: Annotated[Daemon, Depends(get_daemon)]) -> LiveDriver:
    return daemon.driver


DaemonDep = Annotated[Daemon, Depends(get_daemon)]
DriverDep = Annotated[LiveDriver, Depends(get_driver)]


def require_admin(request: HTTPRequest, daemon: DaemonDep) -> None:
    """Admin endpoints: 404 when no token is set (they are off), 401 without the right bearer token."""
    if not daemon.admin_token:
        raise APIError(404, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV} to enable them")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), daemon.admin_token.encode()):
        raise APIError(401, "admin endpoints need 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})


def key_tenant(daemon: Daemon, authorization: str) -> str | None:
    """The tenant of the API key in an ``Authorization`` header's value; None when the daemon has no keys.
    A 401 (``invalid_api_key``) as OpenAI answers a missing or wrong key."""
    if not daemon.keys.enabled:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    tenant = daemon.keys.tenant_for(key) if key else None
    if tenant is None:
        what = "Incorrect API key provided" if key else "No API key provided: send 'Authorization: Bearer KEY'"
        raise APIError(401, what, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return tenant


def key_refusal(daemon: Daemon, scope: dict) -> Any:
    """For `RequestGuard`, before it reads the body: the 401 response to a request without a valid API key
    (None when the key is valid or the daemon has none), so a caller without a key learns nothing of the body
    checks."""
    value = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
    try:
        key_tenant(daemon, value.decode("latin-1"))
    except APIError as exc:
        return exc.response()
    return None


def api_tenant(request: HTTPRequest, daemon: DaemonDep) -> str | None:
    """Inference endpoints: without configured keys, open (None); else the presented key's tenant,
    or a 401 (``invalid_api_key``) as OpenAI answers a missing or wrong key."""
    return key_tenant(daemon, request.headers.get("authorization", ""))


#: The tenant of the request's API key (None when the daemon has no keys).
TenantDep = Annotated[str | None, Depends(api_tenant)]


def result_error(r: LiveResult, *, chat: bool = False, results: Sequence[LiveResult] | None = None) -> APIError:
    """The error for a request that did not complete: its status from its final state and code. A
    request too long for the model names its input (``prompt``, a chat's ``messages``) as OpenAI's
    context-length error does, whether the input alone or with ``max_tokens`` is over. It carries
    ``x-request-id`` and the ``controlplane`` object (of all the reply's ``results``, or of ``r``) as an answer
    does: the request was recorded, and its row is how an operator learns why it failed."""
    status = r.http_status
    message = r.reason or r.status
    if r.status in ("rejected", "failed"):
        message = f"{r.status}: {message}"
    code = r.reason_code.value if r.reason_code is not None else r.status
    results = list(results or [r])
    headers = {"x-request-id": ",".join(x.request_id for x in results)}
    if status in (429, 503):  # the policy's own hint where it gave one (whole seconds, at least 1)
        retry = r.retry_after_s
        headers["retry-after"] = str(max(1, math.ceil(retry))) if retry is not None and retry < 1e9 else "1"
    # a prompt too long for the model names the field at fault, whether the model's check or a policy refused it
    param = ("messages" if chat else "prompt") if r.reason_code is ReasonCode.TOO_LONG else None
    return APIError(status, message, code=code, param=param, headers=headers,
                    extension=controlplane_extension(results))


async def _api_error(request: HTTPRequest, exc: APIError) -> JSONResponse:
    return exc.response()


async def _request_error(request: HTTPRequest, exc: RequestError) -> JSONResponse:
    headers = {**({"retry-after": "5"} if exc.http_status == 503 else {}), **(getattr(exc, "headers", None) or {})}
    return APIError(exc.http_status, str(exc), param=exc.param, code=exc.code.value, headers=headers or None,
                    extension=recorded_extension(exc)).response()


async def _invalid(request: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = _param(first.get("loc", ()))
    what = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        where, what = None, "the request body is not valid JSON"
    elif not where:  # the body itself is not an object, or was not sent as JSON
        what = _not_an_object(request.headers.get("content-type"))
    message = f"{where}: {what}" if where else what
    return APIError(400, message, param=where, code=ReasonCode.INVALID.value,
                    headers=_ignored_header(request, exc.body)).response()


def _ignored_header(request: HTTPRequest, body: Any) -> dict[str, str] | None:
    """A refused body's unknown fields, in ``x-ignored-fields`` as every other answer names them (a
    misspelt ``max_token`` beside the field at fault)."""
    from controlplane.live.daemon_requests import ChatCompletionRequest, CompletionRequest
    from controlplane.live.ignored_fields import HEADER, header_value, unknown_in_raw

    path = request.url.path
    model = ChatCompletionRequest if path.endswith("/chat/completions") else \
        CompletionRequest if path.endswith("/completions") else None
    names = unknown_in_raw(body, model) if model is not None else []
    return {HEADER: header_value(names)} if names else None


def _not_an_object(content_type: str | None) -> str:
    """Why the body is not the object a route takes: FastAPI parses a body as JSON only without a
    content type or with a JSON one (``curl -d`` sends ``application/x-www-form-urlencoded``)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        return f"the request body must be JSON sent with 'Content-Type: application/json' (this one was {kind!r})"
    return "the request body must be a JSON object"


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param(loc: Any) -> str | None:
    """The field a validation error is about, as OpenAI names it (``messages.0.content``), without
    pydantic's union-member tags."""
    parts = [str(p) for p in loc
             if isinstance(p, int) or (p != "body" and str(p).isidentifier() and p not in _TYPE_TAGS)]
    return ".".join(parts)[:200] or None


async def _http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the OpenAI shape."""
    return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()


async def _unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
    """A bug: a 500 in the OpenAI shape (the traceback goes to the log, not to the client)."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, f"internal error: {type(exc).__name__}").response()


#: The app's exception handlers (`fastapi.FastAPI(exception_handlers=...)`).
error_handlers = {APIError: _api_error, RequestValidationError: _invalid, RequestError: _request_error,
                  StarletteHTTPException: _http_error, Exception: _unexpected}
