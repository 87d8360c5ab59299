"""The first check of an API request's body, before FastAPI parses it: size, JSON syntax, nesting
depth, finite numbers and valid Unicode.

`RequestGuard` is ASGI middleware for ``POST /v1/...``: it reads the body (refusing it with 413
as soon as it is over `MAX_BODY_BYTES`, from ``content-length`` when the client sends one),
parses it, and answers 400 in the OpenAI error shape when it is not JSON, is nested deeper than
`MAX_JSON_DEPTH`, holds ``NaN``/``Infinity`` (or a number too large for a double) or a string
that is not valid Unicode (a lone surrogate escape such as ``"\\ud800"``), or a NUL character
(``"\\u0000"``) in a field stored with the request (`STORED_FIELDS`: PostgreSQL stores no NUL in
text, so its row would be refused and the request, served, missing from the run). A body that
passes is handed on unchanged, byte for byte. A body that has not all arrived ``body_timeout_s`` after its
headers (a client sending it a byte at a time, holding a connection and a handler) gets 408 and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

from controlplane.live.daemon_openai import error_body
from controlplane.types import ReasonCode

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "STORED_FIELDS", "BodyProblem", "RequestGuard", "check_body"]

#: The largest request body accepted (bytes).
MAX_BODY_BYTES = 2 * 1024 * 1024
#: The deepest JSON nesting accepted (a chat body needs 4: body, messages, message, content part).
MAX_JSON_DEPTH = 32
#: The body's string fields stored in the request's row (``model``; ``user``, its tenant without API keys).
STORED_FIELDS = ("model", "user")

_INVALID = ReasonCode.INVALID.value


class BodyProblem(ValueError):
    """Why a body is refused: its HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param = status, param


def _no_constant(name: str) -> Any:
    raise BodyProblem(400, f"{name} is not valid JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyProblem(400, f"the number {text[:30]} is out of range: numbers must be finite")
    return value


def check_body(raw: bytes) -> Any:
    """The parsed body, or `BodyProblem` saying what is wrong with it."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyProblem(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyProblem(400, "the request body is not valid UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except BodyProblem:
        raise
    except RecursionError:
        raise BodyProblem(400, f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        raise BodyProblem(400, f"the request body is not valid JSON: {str(exc)[:200]}") from None
    except ValueError:  # an integer with thousands of digits
        raise BodyProblem(400, "the request body holds a number with too many digits") from None
    _walk(body)
    if isinstance(body, dict):
        for name in STORED_FIELDS:
            if isinstance(body.get(name), str) and "\x00" in body[name]:
                raise BodyProblem(400, f"{name}: a NUL character (\\u0000) is not allowed in it (it is stored with "
                                       "the request, and databases store no NUL in text)", name)
    return body


def _walk(body: Any) -> None:
    """Depth and Unicode, iteratively (no recursion on hostile input)."""
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            _text(node, path)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BodyProblem(400, f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)",
                              path or None)
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}" if path else key
                _text(key, path or None)
                stack.append((value, where, depth + 1))
        else:
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


def _text(s: str, path: str | None) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        where = _printable(path)
        raise BodyProblem(400, f"{where or 'a key of the body'}: invalid Unicode (a lone surrogate escape)",
                          where) from None


def _printable(path: str | None) -> str | None:
    """A path safe to echo back (a key may itself hold a lone surrogate)."""
    if path is None:
        return None
    return path.encode("utf-8", "backslashreplace").decode("utf-8")[:200]


class RequestGuard:
    """ASGI middleware: `check_body` for ``POST /v1/...`` before the app sees the request. With ``authorize``
    (the scope -> a response refusing it, or None), the request is authorized first, before its body is read."""

    def __init__(self, app: Any, prefix: str = "/v1/", authorize: Callable[[dict], Any] | None = None,
                 body_timeout_s: float | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.authorize = authorize
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self.authorize is not None and (refusal := self.authorize(scope)) is not None:
            await refusal(scope, receive, send)
            return
        try:
            raw = await self._read_in_time(scope, receive)
            check_body(raw)
        except BodyProblem as exc:
            await _answer(send, exc)
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()  # http.disconnect, when the client goes away

        await self.app(scope, replay, send)

    async def _read_in_time(self, scope: dict, receive: Any) -> bytes:
        if not self.body_timeout_s:
            return await self._read(scope, receive)
        try:
            return await asyncio.wait_for(self._read(scope, receive), self.body_timeout_s)
        except asyncio.TimeoutError:  # (TimeoutError from 3.11)
            raise BodyProblem(408, f"the request body did not arrive within {self.body_timeout_s:g} s of its "
                                   "headers") from None

    async def _read(self, scope: dict, receive: Any) -> bytes:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise BodyProblem(400, "content-length is not a number") from None
                if declared > MAX_BODY_BYTES:
                    raise BodyProblem(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyProblem(400, "the client disconnected before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BodyProblem(413, f"the request body is over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _answer(send: Any, problem: BodyProblem) -> None:
    payload = json.dumps(error_body(problem.status, str(problem), param=problem.param, code=_INVALID),
                         ensure_ascii=False, separators=(",", ":")).encode()  # (as the app's own JSON responses)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if problem.status == 408:  # the rest of the body never came: the connection serves no other request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
