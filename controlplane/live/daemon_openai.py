"""The OpenAI-compatible response shapes the daemon speaks: completions, chat completions, their
stream chunks and error bodies. (The request bodies, checked at the edge, are in
`controlplane.live.daemon_requests`; they are re-exported here.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from controlplane.live.daemon_requests import ChatCompletionRequest, CompletionRequest
from controlplane.live.results import LiveResult
from controlplane.types import Request

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "controlplane_extension",
    "error_body",
    "new_id",
    "sse",
    "usage",
]


# --- responses ------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(results: Sequence[LiveResult], n: int = 1) -> dict[str, int]:
    """The answer's token counts, as OpenAI gives them: each prompt counted once, whatever its
    number of choices ``n`` (the results come prompt by prompt, ``n`` choices each), and every
    choice's completion."""
    prompt = sum(r.prompt_tokens for r in results[::n])
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def controlplane_extension(results: Sequence[LiveResult | Request]) -> dict[str, Any]:
    """Control-plane facts about each choice (ignored by OpenAI clients): a response's
    ``controlplane`` object, a stream's last chunks' and a recorded request's error's (``results`` may be
    the core's `Request` of a request refused before it had a result: the same fields)."""
    return {
        "requests": [
            {
                "request_id": r.request_id,
                "worker_id": r.worker_id,
                "reason": r.reason,
                "reason_code": r.reason_code.value if r.reason_code is not None else None,
                "num_retries": r.num_retries,
                "cache_hit": r.cache_hit,
                "guardian_verdict": r.guardian_verdict,
            }
            for r in results
        ]
    }


def completion_response(rid: str, model: str, results: Sequence[LiveResult], n: int = 1) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ],
        "usage": usage(results, n),
        "controlplane": controlplane_extension(results),
    }


def chat_response(rid: str, model: str, results: Sequence[LiveResult], n: int = 1) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(results, n),
        "controlplane": controlplane_extension(results),
    }


def completion_chunk(rid: str, model: str, created: int, text: str, finish_reason: str | None = None,
                     usage_: dict[str, int] | None = None, extension: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if usage_ is not None else [
        {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    ]
    chunk: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": model,
                             "choices": choices}
    if usage_ is not None:
        chunk["usage"] = usage_
    if extension is not None:
        chunk["controlplane"] = extension
    return chunk


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any] | None, finish_reason: str | None = None,
               usage_: dict[str, int] | None = None, extension: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if usage_ is not None else [
        {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    ]
    chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": choices}
    if usage_ is not None:
        chunk["usage"] = usage_
    if extension is not None:
        chunk["controlplane"] = extension
    return chunk


ErrorType = Literal[
    "invalid_request_error", "authentication_error", "not_found_error", "rate_limit_error", "server_error",
    "service_unavailable", "timeout",
]

_TYPES: dict[int, ErrorType] = {
    400: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               extension: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's error body; with ``extension``, the `controlplane_extension` of the recorded request(s) it answers
    for, beside ``error`` (as a response carries it)."""
    body: dict[str, Any] = {
        "error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}
    if extension is not None:
        body["controlplane"] = extension
    return body


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
