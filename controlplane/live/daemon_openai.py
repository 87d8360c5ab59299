"""The OpenAI-compatible request and response shapes the daemon speaks.

Only what the control plane can honour is accepted: options it cannot apply (logprobs, echo,
penalties, tools) are refused with a 400 naming the option rather than silently ignored.
Extensions, as in vLLM: ``top_k``, ``ignore_eos`` and ``priority``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controlplane.live.results import LiveResult

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "new_id",
    "sse",
    "usage",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # extensions (vLLM-style)
    top_k: int | None = None
    ignore_eos: bool = False
    priority: int = 0

    def unsupported(self) -> str | None:
        """The first option given that the daemon cannot honour, if any."""
        if self.presence_penalty:
            return "presence_penalty"
        if self.frequency_penalty:
            return "frequency_penalty"
        if self.logit_bias:
            return "logit_bias"
        return None

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def sampling_kwargs(self) -> dict[str, Any]:
        return {
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": self.top_k or 0,
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
            "tenant": self.user,
            "priority": self.priority,
        }


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int | None = 16
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # one prompt of token ids
        return list(p)  # several prompts: strings or id lists

    def unsupported(self) -> str | None:
        if self.echo:
            return "echo"
        if self.logprobs is not None:
            return "logprobs"
        if self.suffix:
            return "suffix"
        if self.best_of not in (None, 1):
            return "best_of"
        return super().unsupported()


class ChatCompletionRequest(_Body):
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.logprobs:
            return "logprobs"
        if self.tools:
            return "tools"
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            return "response_format"
        return super().unsupported()

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# --- responses ------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(results: Sequence[LiveResult]) -> dict[str, int]:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extension(results: Sequence[LiveResult]) -> dict[str, Any]:
    """Control-plane facts about each choice (ignored by OpenAI clients)."""
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


def completion_response(rid: str, model: str, results: Sequence[LiveResult]) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ],
        "usage": usage(results),
        "controlplane": _extension(results),
    }


def chat_response(rid: str, model: str, results: Sequence[LiveResult]) -> dict[str, Any]:
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
        "usage": usage(results),
        "controlplane": _extension(results),
    }


def completion_chunk(rid: str, model: str, created: int, text: str, finish_reason: str | None = None,
                     usage_: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if usage_ is not None else [
        {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    ]
    chunk: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": model,
                             "choices": choices}
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any] | None, finish_reason: str | None = None,
               usage_: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if usage_ is not None else [
        {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    ]
    chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": choices}
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


ErrorType = Literal[
    "invalid_request_error", "authentication_error", "not_found_error", "rate_limit_error", "server_error",
    "service_unavailable", "timeout",
]

_TYPES: dict[int, ErrorType] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
