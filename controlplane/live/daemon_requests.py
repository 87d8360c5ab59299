"""The OpenAI-compatible request bodies the daemon accepts, checked field by field at the edge.

Every field is checked against the OpenAI API's types and ranges (strictly: ``"5"`` is not a
number, ``true`` is not an integer, numbers are finite) and bounded in size, so that nothing a
worker could choke on gets past the HTTP handler. What depends on the model (the context length,
the vocabulary) is checked by `check_for_model` once the model is known; the body's size, JSON
syntax, nesting depth and Unicode by `controlplane.live.request_guard` before it is parsed here.

Only what the control plane can honour is accepted: options it cannot apply (logprobs, echo,
penalties, logit_bias, tools) are refused with a 400 naming the option (`_Body.unsupported`)
rather than silently ignored. Extensions, as in vLLM: ``top_k``, ``ignore_eos`` and ``priority``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controlplane.live.http_errors import INT32_MAX
from controlplane.types import ReasonCode

__all__ = [
    "LIMITS",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EdgeError",
    "check_for_model",
]

#: The bounds the daemon enforces (documented in docs/daemon.md).
LIMITS: dict[str, int] = {
    "max_prompts": 64,  # prompts in one completion request
    "max_choices": 64,  # prompts x n
    "max_n": 16,
    "max_stop": 4,  # stop sequences (as OpenAI)
    "max_stop_chars": 256,
    "max_logit_bias": 300,  # entries (as OpenAI)
    "max_messages": 256,
    "max_content_parts": 64,
    "max_name_chars": 256,  # model, user, message name
}

_ROLES = ("system", "developer", "user", "assistant")
_INT64 = 2**63 - 1


class EdgeError(ValueError):
    """A request refused at the edge (400), naming the field at fault; ``code`` is the error's code
    (``invalid``; ``too_long`` for a length over the model's context, as the later checks say it)."""

    def __init__(self, message: str, param: str | None = None, code: str = ReasonCode.INVALID.value) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def _finite(default: float | None = None, **bounds: float) -> Any:
    return Field(default, allow_inf_nan=False, **bounds)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, max_length=LIMITS["max_name_chars"])
    temperature: float | None = _finite(ge=0, le=2)
    top_p: float | None = _finite(gt=0, le=1)
    n: int = Field(1, ge=1, le=LIMITS["max_n"])
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-_INT64 - 1, le=_INT64)
    user: str | None = Field(None, max_length=LIMITS["max_name_chars"])
    presence_penalty: float | None = _finite(ge=-2, le=2)
    frequency_penalty: float | None = _finite(ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # extensions (vLLM-style); top_k -1 is "off", as in vLLM
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    ignore_eos: bool = False
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)

    @field_validator("n", "stream", "ignore_eos", "priority", "echo", mode="before", check_fields=False)
    @classmethod
    def _null_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        """``null`` is the field's default, as OpenAI types these fields (nullable) and as the other fields take it."""
        return cls.model_fields[info.field_name].default if v is None else v

    @field_validator("user", mode="before")
    @classmethod
    def _tenant_name(cls, v: Any) -> Any:
        """The tenant without surrounding spaces, as traces read it; a blank one is none (``null``)."""
        return (v.strip() or None) if isinstance(v, str) else v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > LIMITS["max_stop"]:
            raise ValueError(f"at most {LIMITS['max_stop']} stop sequences")
        for s in stops:
            if not s:
                raise ValueError("stop sequences must not be empty")
            if len(s) > LIMITS["max_stop_chars"]:
                raise ValueError(f"stop sequences are at most {LIMITS['max_stop_chars']} characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if len(v) > LIMITS["max_logit_bias"]:
            raise ValueError(f"at most {LIMITS['max_logit_bias']} entries")
        for key, bias in v.items():
            if not key.isdigit() or len(key) > 12:
                raise ValueError(f"keys are token ids, got {key[:20]!r}")
            if not -100 <= bias <= 100:  # NaN fails this too
                raise ValueError("biases are between -100 and 100")
        return v

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
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_kwargs(self) -> dict[str, Any]:
        return {
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": max(0, self.top_k or 0),
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
            "tenant": self.user,
            "priority": self.priority,
        }


class CompletionRequest(_Body):
    # str | list[str] | list[int] | list[list[int]], checked by `_prompt` with a clear message
    prompt: Any = ""
    # None: 16 (OpenAI's), at most the context's room; at most INT32_MAX: stored in the request's row (an INTEGER)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=LIMITS["max_n"])

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, p: Any) -> Any:
        shape = "a string, a list of strings, a list of token ids or a list of token-id lists"
        if isinstance(p, str):
            return p
        if not isinstance(p, list):
            raise ValueError(f"must be {shape}")  # noqa: TRY004 - pydantic turns ValueError into a 400
        if all(_is_token(t) for t in p):
            return p
        if len(p) > LIMITS["max_prompts"]:
            raise ValueError(f"at most {LIMITS['max_prompts']} prompts in one request")
        if all(isinstance(x, str) for x in p):
            return p
        if all(isinstance(x, list) and all(_is_token(t) for t in x) for x in p):
            return p
        raise ValueError(f"must be {shape} (token ids are integers >= 0)")

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


class ChatMessage(BaseModel):
    """One chat message: a known role and text content (a string or OpenAI text parts)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: str
    content: Any = Field(None, validate_default=True)  # str | list of text parts (None: assistant only)
    name: str | None = Field(None, max_length=LIMITS["max_name_chars"])

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in _ROLES:
            raise ValueError(f"must be one of {', '.join(_ROLES)} (tools are not supported), got {role[:40]!r}")
        return role

    @field_validator("content")
    @classmethod
    def _content(cls, content: Any, info: ValidationInfo) -> Any:
        _text_of(content, info.data.get("role"))
        return content

    @model_validator(mode="after")
    def _no_tools(self) -> ChatMessage:
        extra = self.model_extra or {}
        for key in ("tool_calls", "function_call", "tool_call_id"):
            if extra.get(key) is not None:
                raise ValueError(f"{key} is not supported by this server")
        return self

    def text(self) -> str:
        return _text_of(self.content, self.role)

    def for_template(self) -> dict[str, str]:
        """The message as a chat template reads it (``developer`` is ``system`` to templates)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(max_length=LIMITS["max_messages"])
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)  # (stored in the request's row: an INTEGER)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.logprobs:
            return "logprobs"
        if self.top_logprobs:
            return "top_logprobs"
        if self.tools:
            return "tools"
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            return "response_format"
        return super().unsupported()

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, str]]:
        return [m.for_template() for m in self.messages]


def check_for_model(body: CompletionRequest | ChatCompletionRequest, max_seq_len: int, vocab_size: int) -> None:
    """What depends on the served model: ``max_tokens`` within its length, token ids (prompt and
    ``logit_bias``) within its vocabulary, and the number of choices. Raises `EdgeError`."""
    chat = isinstance(body, ChatCompletionRequest)
    max_tokens = body.max_new_tokens() if chat else body.max_tokens
    param = "max_completion_tokens" if chat and body.max_completion_tokens is not None else "max_tokens"
    if max_tokens is not None and max_tokens >= max_seq_len:
        raise EdgeError(f"too long: {param} is {max_tokens}; the model's context is {max_seq_len} tokens", param,
                        ReasonCode.TOO_LONG.value)
    prompts = [None] if chat else body.prompts()
    if len(prompts) * body.n > LIMITS["max_choices"]:
        raise EdgeError(f"at most {LIMITS['max_choices']} choices (prompts x n) in one request", "n")
    for p in prompts:
        if isinstance(p, list) and any(t >= vocab_size for t in p):
            raise EdgeError(f"prompt token ids must be in [0, {vocab_size})", "prompt")
    for key in body.logit_bias or {}:
        if int(key) >= vocab_size:
            raise EdgeError(f"logit_bias keys must be token ids in [0, {vocab_size})", "logit_bias")


def _text_of(c: Any, role: str | None) -> str:
    """A message's content as text; ValueError for content that is not text."""
    if c is None:
        if role == "assistant":
            return ""
        raise ValueError("content is required")
    if isinstance(c, str):
        return c
    if not isinstance(c, list):
        raise ValueError("must be a string or a list of text parts")  # noqa: TRY004 - pydantic turns ValueError into a 400
    if len(c) > LIMITS["max_content_parts"]:
        raise ValueError(f"at most {LIMITS['max_content_parts']} content parts")
    texts = []
    for j, part in enumerate(c):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text":
            got = f"type {str(kind)[:40]!r}" if isinstance(part, Mapping) else type(part).__name__
            raise ValueError(f"part {j}: only text content parts are supported, got {got}")
        if not isinstance(part.get("text"), str):
            raise ValueError(f"part {j}: text must be a string")  # noqa: TRY004 - pydantic turns ValueError into a 400
        texts.append(part["text"])
    return "".join(texts)


def _is_token(t: Any) -> bool:
    return type(t) is int and 0 <= t <= _INT64
