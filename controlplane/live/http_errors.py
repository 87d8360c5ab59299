"""What a live request's outcome is as an HTTP status: the errors `LiveDriver.submit` raises
before a request reaches the core, and the status of a finished request from its final state and
`ReasonCode` (never from its reason text, which is for people).

The daemon answers with these statuses; `LiveResult.http_status` gives the same number to
library users.
"""

from __future__ import annotations

from controlplane.types import ReasonCode

__all__ = [
    "HTTP_STATUS_BY_CODE",
    "HTTP_STATUS_BY_STATUS",
    "InvalidRequest",
    "ModelNotFound",
    "RequestError",
    "INT32_MAX",
    "INT32_MIN",
    "check_stored",
    "ServiceUnavailable",
    "http_status_for",
]

#: The HTTP status of each rejection or failure code.
HTTP_STATUS_BY_CODE: dict[ReasonCode, int] = {
    ReasonCode.UNKNOWN_MODEL: 404,
    ReasonCode.TOO_LONG: 400,
    ReasonCode.DOES_NOT_FIT: 400,
    ReasonCode.INVALID: 400,
    ReasonCode.ADMISSION_DENIED: 429,
    ReasonCode.QUEUE_FULL: 429,
    ReasonCode.RATE_LIMITED: 429,
    ReasonCode.QUEUE_TIMEOUT: 429,  # waited past its class's queue timeout: overloaded, retry later
    # A guardian refused the content: the same request would be refused again, so the client
    # must change it (OpenAI answers content-policy refusals with 400 as well).
    ReasonCode.BLOCKED: 400,
    ReasonCode.WORKER_FAILED: 503,
    ReasonCode.STALLED: 503,
    ReasonCode.UNAVAILABLE: 503,
    ReasonCode.TIMEOUT: 504,  # no answer within the daemon's request timeout
    ReasonCode.CLIENT_GONE: 499,  # its client went away (nginx's "client closed the request")
}

#: The HTTP status of final states that need no code. 499 is nginx's "client closed the
#: request": nobody is left to read it, but it is what the access log and metrics show.
HTTP_STATUS_BY_STATUS: dict[str, int] = {"completed": 200, "cancelled": 499, "timeout": 504}

#: A rejection without a code (a plugin that gave none): a refusal, like an admission policy's.
_REJECTED_WITHOUT_CODE = 429
#: Failed, or still in flight when the daemon stopped, without a code: try again later.
_OTHERWISE = 503


def http_status_for(status: str, code: ReasonCode | str | None = None) -> int:
    """The HTTP status of a request's final ``status`` (``RequestStatus`` value, ``timeout`` or
    ``in_flight``) and its reason ``code``."""
    fixed = HTTP_STATUS_BY_STATUS.get(status)
    if fixed is not None:
        return fixed
    if code is not None:
        return HTTP_STATUS_BY_CODE[ReasonCode(code)]
    return _REJECTED_WITHOUT_CODE if status == "rejected" else _OTHERWISE


class RequestError(Exception):
    """A request refused before it reached the core, with its code (and HTTP status)."""

    code: ReasonCode = ReasonCode.INVALID

    def __init__(self, message: str, *, code: ReasonCode | None = None, param: str | None = None,
                 prompt_tokens: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.param = param  # the request field at fault, if one is
        self.prompt_tokens = prompt_tokens  # the prompt's tokens where the refusal counted them (recorded in its row)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE[self.code]


class ServiceUnavailable(RequestError, RuntimeError):
    """The driver is not running or is draining (HTTP 503)."""

    code = ReasonCode.UNAVAILABLE


class InvalidRequest(RequestError, ValueError):
    """The request cannot be served as asked (HTTP 400; ``TOO_LONG`` for a prompt over the context)."""

    code = ReasonCode.INVALID


class ModelNotFound(RequestError, LookupError):
    """No deployment serves the requested model (HTTP 404)."""

    code = ReasonCode.UNKNOWN_MODEL


#: The range of the integers stored in a request's row (``max_output_tokens``, ``priority``: INTEGER columns;
#: PostgreSQL refuses a row with one outside it, SQLite stores it).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def check_stored(**fields: object) -> None:
    """Raise `InvalidRequest` naming the first of ``fields`` that cannot be stored with the request: text holding
    a NUL character (databases store no NUL in text), or an integer outside the 32-bit range of the row's
    INTEGER columns. PostgreSQL would refuse the row, and the request, served or rejected, would be missing
    from the run."""
    for name, value in fields.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest(f"{name}: a NUL character (\\u0000) is not allowed in it (it is stored with the "
                                 "request, and databases store no NUL in text)", param=name)
        if isinstance(value, int) and not INT32_MIN <= value <= INT32_MAX:
            raise InvalidRequest(f"{name}: {str(value)[:40]} is out of range: it is stored with the request, in a "
                                 f"32-bit integer column ({INT32_MIN} to {INT32_MAX})", param=name)
