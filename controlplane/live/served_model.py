"""A deployment as the live driver sees it: its tokenizer and limits (loaded without the weights),
chat rendering, and a client's request checked and tokenized for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from controlplane.config import RunConfig
from controlplane.errors import ConfigError
from controlplane.live.http_errors import InvalidRequest
from controlplane.live.model_source import WorkerModelSettings, build_config, load_tokenizer
from controlplane.live.prefix_store import block_hashes
from controlplane.live.sampling import SamplingParams, StopCondition
from controlplane.types import ReasonCode

__all__ = ["LARGE_PROMPT_CHARS", "PreparedPrompt", "ServedModel", "content_text", "load_served_model", "served_lengths",
           "worker_settings"]


#: A text prompt longer than this (characters) is tokenized in a thread (`ServedModel.tokenize_ahead`):
#: about 10 ms of a fast tokenizer's time. A 2 MiB prompt takes seconds, which on the event loop
#: stalled every other request, stream and probe of the daemon meanwhile.
LARGE_PROMPT_CHARS = 32 * 1024


@dataclass(frozen=True)
class PreparedPrompt:
    """A request checked against its model: token ids, how to sample and stop, the recorded params."""

    text: str | None  # the prompt text (None when the client sent token ids)
    ids: tuple[int, ...]
    sampling: SamplingParams
    stop: StopCondition
    params: tuple[tuple[str, Any], ...]  # ``Request.params``: the generation options, sorted
    # Chained hashes of the prompt's whole blocks of ``hash_block_tokens`` token ids (the engine's
    # prefix block size), when the workers keep prefix KV: ``Request.hash_ids``, so the prefix-cache
    # plugin and the routers see live prefixes as they see a trace's. Empty when they do not.
    hash_ids: tuple[int, ...] = ()
    hash_block_tokens: int | None = None


@dataclass
class ServedModel:
    """A deployment as the driver sees it: worker settings and the tokenizer for requests."""

    name: str
    settings: WorkerModelSettings
    tokenizer: Any
    max_seq_len: int
    vocab_size: int
    # (prompt, special tokens) -> (its ids, tokenized ahead in a thread for `prepare` on the event loop;
    # the requests in flight that asked for them): kept while one of those requests is being submitted
    _ahead: dict[tuple[str, bool], tuple[list[int], int]] = field(default_factory=dict, repr=False)

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        ahead = self._ahead.get((text, special_tokens)) if self._ahead else None
        if ahead is not None:
            return ahead[0]
        return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    async def tokenize_ahead(self, prompt: Any, *, chat: bool = False) -> bool:
        """Tokenize a large text prompt (over `LARGE_PROMPT_CHARS`) in a thread, so that `prepare` and
        `encode`, which run on the event loop, find its ids instead of stalling the loop for seconds.
        True when it did; the caller then calls `forget_ahead` once the prompt is submitted or refused."""
        if not isinstance(prompt, str) or len(prompt) <= LARGE_PROMPT_CHARS:
            return False
        key = (prompt, not chat)  # (as `prepare` encodes it)
        if key not in self._ahead:
            ids = await asyncio.to_thread(
                lambda: list(self.tokenizer(prompt, add_special_tokens=key[1])["input_ids"]))
        known = self._ahead.get(key)  # (another request may have tokenized it meanwhile)
        self._ahead[key] = (known[0], known[1] + 1) if known is not None else (ids, 1)
        return True

    def forget_ahead(self, prompt: str, *, chat: bool = False) -> None:
        key = (prompt, not chat)
        known = self._ahead.pop(key, None)
        if known is not None and known[1] > 1:
            self._ahead[key] = (known[0], known[1] - 1)

    @contextmanager
    def encoded_as(self, text: str, ids: Sequence[int]) -> Iterator[None]:
        """While open, the prompt ``text`` (not a chat's) is encoded as ``ids``: a live trace replay serves a
        prompt text as the trace's count of token ids, the text still the request's prompt (caches, guardians)."""
        key = (text, True)
        known = self._ahead.get(key)
        self._ahead[key] = (list(ids), 1)
        try:
            yield
        finally:
            if known is not None:
                self._ahead[key] = known
            else:
                self._ahead.pop(key, None)

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
        """The prompt for a chat; True when it came from the tokenizer's chat template."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return text, True
        lines = [f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in messages]
        return "\n".join(lines) + "\nassistant:", False

    def prepare(
        self,
        prompt: str | Sequence[int],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        ignore_eos: bool = False,
        chat: bool = False,
    ) -> PreparedPrompt:
        """Tokenize and check a request (text or token ids); raises `InvalidRequest` saying what is wrong."""
        if isinstance(prompt, str):
            text: str | None = prompt
            ids = self.encode(prompt, special_tokens=not chat)
        else:
            text = None
            ids = [int(t) for t in prompt]
        if not ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if len(ids) >= self.max_seq_len:  # (before the walk over the ids: a huge prompt is refused at once)
            raise InvalidRequest(
                f"too long: the prompt has {len(ids)} tokens; the model's context is {self.max_seq_len}",
                code=ReasonCode.TOO_LONG, param="prompt", prompt_tokens=len(ids),
            )
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {self.vocab_size})", param="prompt")
        if max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        try:
            sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
            stop_cond = StopCondition(eos_token_ids=() if ignore_eos else None, stop_strings=stops)
        except ValueError as exc:  # the message starts with the field at fault
            field = str(exc).split(" ", 1)[0]
            param = field if field in ("temperature", "top_p", "top_k") else "stop" if "stop" in str(exc) else None
            raise InvalidRequest(str(exc), param=param) from None
        params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
        if seed is not None:
            params["seed"] = seed
        if stops:
            params["stop"] = stops
        if ignore_eos:
            params["ignore_eos"] = True
        hashes, block = (), None
        if self.settings.prefix_cache_tokens > 0:
            block = self.settings.prefix_block_tokens
            hashes = block_hashes(ids, block)
        return PreparedPrompt(text, tuple(ids), sampling, stop_cond, tuple(sorted(params.items())), hashes,
                              block if hashes else None)


def content_text(content: Any) -> str:
    """A chat message's content as text (of OpenAI content parts, the text ones)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


def worker_settings(config: RunConfig, model: str) -> WorkerModelSettings:
    """The deployment's ``worker`` section as validated worker settings (default: tiny-llama)."""
    d = config.cluster.deployment(model)
    if d is None:
        raise ConfigError(f"no deployment named {model!r}")
    try:
        return WorkerModelSettings(**(d.worker or {}))
    except Exception as exc:
        raise ConfigError(f"cluster.models[{d.name}].worker: {exc}") from None


def load_served_model(name: str, settings: WorkerModelSettings, max_model_len: int | None = None) -> ServedModel:
    """Tokenizer and limits of a deployment's model, without loading its weights. Its ``max_seq_len``
    is the length that applies: the smallest of the worker's, the model's positions and the
    deployment's ``max_model_len``."""
    if settings.path is not None:
        from transformers import AutoConfig

        try:
            cfg = AutoConfig.from_pretrained(settings.path, local_files_only=True)
        except (OSError, ValueError) as exc:  # no config.json; one without a known model_type
            raise ConfigError(f"model {name}: cannot read a model config in {settings.path}: {exc}") from None
    else:
        cfg = build_config(settings)
    tokenizer = load_tokenizer(settings.path, cfg)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    limit = getattr(text_cfg, "max_position_embeddings", None) or settings.max_seq_len
    length = min(settings.max_seq_len, int(limit), max_model_len or settings.max_seq_len)
    return ServedModel(name, settings, tokenizer, length, int(text_cfg.vocab_size))


def served_lengths(config: RunConfig, models: Mapping[str, ServedModel]) -> RunConfig:
    """``config`` with each deployment's ``max_model_len`` the length its model is served with
    (`ServedModel.max_seq_len`: at most the one configured, the worker's and the model's positions).
    The core's ``too_long`` check is then the edge's: a request refused as too long at the edge is one
    the core refuses too (`controlplane.live.core_refusals`), and one the core admits fits its worker's
    context (with none set, or one over the model's positions, it let longer ones through, cut short)."""
    models_ = [d if d.max_model_len == models[d.name].max_seq_len else
               d.model_copy(update={"max_model_len": models[d.name].max_seq_len}) for d in config.cluster.models]
    if all(a is b for a, b in zip(models_, config.cluster.models, strict=True)):
        return config
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"models": models_})})
