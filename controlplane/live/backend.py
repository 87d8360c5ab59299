"""Iteration-level (continuous) batching over a transformers causal LM.

The engine does not schedule: the caller - the worker, driven by the control plane's scheduling
plugins - decides each iteration which waiting requests to prefill and which running ones to
decode, and calls ``step()`` once per iteration. The engine runs that iteration as batched as it
can (one padded prefill forward, one decode forward over a shared padded KV cache) and reports
tokens, streamed text and the iteration's measured shape and duration for profiling.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from controlplane.live.kv_batch import BatchKV, hole_filling_order
from controlplane.live.model_source import LoadedModel, WorkerModelSettings, load_model
from controlplane.live.prefix_store import PrefixKVStore, prefill_with_store
from controlplane.live.sampling import SamplingParams, StopCondition, sample_rows
from controlplane.live.streaming import OutputStream

__all__ = [
    "CausalLMBackend",
    "GenerationOutput",
    "RequestOutput",
    "SamplingParams",
    "StepResult",
    "StopCondition",
]


@dataclass
class RequestOutput:
    """What one request produced in one iteration."""

    request_id: str
    token_id: int
    text_delta: str
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "eos" once finished; "error" when it failed
    num_generated: int
    error: str | None = None  # why this request failed here (it left the engine; the others went on)


@dataclass
class StepResult:
    """One iteration: per-request outputs plus the shape and measured time the profiler needs."""

    outputs: list[RequestOutput]
    duration_s: float
    num_prefill_tokens: int = 0  # real prompt tokens prefilled
    num_prefill_seqs: int = 0
    num_decode_seqs: int = 0
    sum_decode_context: int = 0  # sum over decoded seqs of their KV length before this iteration
    sum_prefill_context: int = 0  # KV already cached for the prefilled seqs before this chunk (always 0 here)
    padded_prefill_tokens: int = 0  # prefill tokens computed including left padding
    decode_kv_columns: int = 0  # padded KV length of the decode forward
    padded_decode_context: int = 0  # KV entries the decode forward attended over, padding included
    by_id: dict[str, RequestOutput] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {o.request_id: o for o in self.outputs}

    def profile_row(self, *, padded: bool = False) -> dict[str, float | int]:
        """The iteration as a profile row (`controlplane.hardware.profile_format`); with
        ``padded``, also what this padded engine really computed (``PADDED_FIELDS``)."""
        row: dict[str, float | int] = {
            "num_prefill_tokens": self.num_prefill_tokens,
            "num_prefill_seqs": self.num_prefill_seqs,
            "num_decode_seqs": self.num_decode_seqs,
            "sum_decode_context": self.sum_decode_context,
            "sum_prefill_context": self.sum_prefill_context,
            "iteration_s": self.duration_s,
        }
        if padded:
            row["padded_prefill_tokens"] = self.padded_prefill_tokens
            row["padded_decode_context"] = self.padded_decode_context
        return row


@dataclass
class GenerationOutput:
    """A whole request's result (the one-at-a-time path)."""

    token_ids: list[int]
    text: str
    finish_reason: str
    num_steps: int
    duration_s: float


@dataclass
class _Request:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    generator: torch.Generator | None
    stream: OutputStream
    context_len: int = 0  # tokens of this request held in the KV cache
    next_input: int | None = None  # last sampled token, fed to the next decode
    error: str | None = None  # set when this request failed in a step: it leaves at the step's end
    prefix_scope: str | None = None  # whose stored prompt prefixes it may reuse (its tenant; None: shared)

    @property
    def done(self) -> bool:
        return self.error is not None or self.stream.finished


class CausalLMBackend:
    """Continuous-batching engine: one iteration per ``step()`` call, state kept between calls.

    Not thread-safe: one worker thread (or process) owns an engine.
    """

    def __init__(self, loaded: LoadedModel, *, max_batch_size: int | None = None, max_seq_len: int | None = None,
                 prefix_cache_tokens: int = 0, prefix_block_tokens: int = 16):
        self.loaded = loaded
        self.model = loaded.model
        base = loaded.base_model if loaded.base_model is not None else loaded.model
        self.config = loaded.config if loaded.config is not None else base.config
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.max_batch_size = max_batch_size
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        limit = getattr(text, "max_position_embeddings", None) or max_seq_len or 2048
        self.max_seq_len = min(max_seq_len, limit) if max_seq_len else limit
        self.vocab_size = int(text.vocab_size)
        self.eos_token_ids = _default_eos(self.config, self.tokenizer)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else 0
        self._forward_kwargs = _forward_kwarg_names(base)
        self._kv_shape = _kv_shape(self.config)
        self._waiting: dict[str, _Request] = {}
        self._running: dict[str, _Request] = {}
        self._rows: list[str] = []  # request id of each KV row
        self._kv = self._new_kv()
        self._anon = itertools.count()
        # Prompt KV kept after prefill and reused by later prompts with the same prefix (0: off)
        self.prefix_store = PrefixKVStore(prefix_cache_tokens, prefix_block_tokens) if prefix_cache_tokens else None

    @classmethod
    def from_settings(cls, settings: WorkerModelSettings, **kwargs) -> CausalLMBackend:
        kwargs.setdefault("prefix_cache_tokens", settings.prefix_cache_tokens)
        kwargs.setdefault("prefix_block_tokens", settings.prefix_block_tokens)
        return cls(load_model(settings), max_seq_len=settings.max_seq_len, **kwargs)

    # -- introspection -------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        """Requests prefilled and holding KV (decodable)."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_tokens_in_use(self) -> int:
        """Real tokens held in the KV cache (padding excluded)."""
        return sum(r.context_len for r in self._running.values())

    @property
    def kv_bytes_allocated(self) -> int:
        """Bytes of the padded KV buffers, including padding and growth headroom."""
        return self._kv.nbytes()

    def running_ids(self) -> list[str]:
        return list(self._rows)

    def waiting_ids(self) -> list[str]:
        return list(self._waiting)

    def has_request(self, request_id: str) -> bool:
        return request_id in self._waiting or request_id in self._running

    # -- request lifecycle ---------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        *,
        max_new_tokens: int,
        stop: StopCondition | None = None,
        sampling: SamplingParams | None = None,
        generated: Sequence[int] = (),
        prefix_scope: str | None = None,
    ) -> None:
        """Queue a request; it is prefilled by the first ``step()`` that lists it in ``prefill_ids``.

        ``generated`` is output the request produced before (it is computed again after a
        preemption, or on another worker after a failure): it is prefilled after the prompt, and
        the request's output stream goes on after it, so text held back at the cut (half a UTF-8
        character, the start of a stop string) is not lost. ``max_new_tokens`` counts it.
        ``prefix_scope`` (a tenant) keeps its prompt KV in the prefix store for that scope's prompts only.
        """
        if self.has_request(request_id):
            raise ValueError(f"request {request_id!r} already exists")
        prompt = [int(t) for t in prompt_token_ids]
        done = [int(t) for t in generated]
        if not prompt:
            raise ValueError("prompt_token_ids must not be empty")
        bad = [t for t in prompt + done if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of vocabulary range [0, {self.vocab_size}): {bad[:5]}")
        if len(prompt) + len(done) >= self.max_seq_len:
            raise ValueError(f"prompt has {len(prompt) + len(done)} tokens; max_seq_len {self.max_seq_len} leaves "
                             "no room to generate")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        stop = stop or StopCondition()
        sampling = sampling or SamplingParams()
        budget = min(max_new_tokens, stop.max_new_tokens or max_new_tokens, self.max_seq_len - len(prompt))
        eos = self.eos_token_ids if stop.eos_token_ids is None else stop.eos_token_ids
        stream = OutputStream(self.tokenizer, prompt, stop, eos, budget)
        for token in done:
            stream.append(token)
        self._waiting[request_id] = _Request(
            request_id=request_id,
            prompt_ids=prompt + done,
            sampling=sampling,
            generator=sampling.make_generator(self.device),
            stream=stream,
            prefix_scope=prefix_scope,
        )

    @torch.inference_mode()
    def remove(self, request_id: str) -> bool:
        """Drop a request (abort / preempt) and free its KV; False if it is not known."""
        if self._waiting.pop(request_id, None) is not None:
            return True
        if self._running.pop(request_id, None) is None:
            return False
        self._compact()
        return True

    # -- the iteration -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, prefill_ids: Sequence[str] = (), decode_ids: Sequence[str] = ()) -> StepResult:
        """Run one iteration: prefill ``prefill_ids`` (first token each), decode one token for ``decode_ids``.

        Both forwards run before any request state changes, so an exception (out of memory, say)
        leaves the engine as it was and the step can be retried or reshaped. Finished requests
        leave the engine at the end of the step; their last output says why.
        """
        start = time.perf_counter()
        prefill = self._take(prefill_ids, self._waiting, "waiting")
        decode = self._take(decode_ids, self._running, "running")
        if set(prefill_ids) & set(decode_ids):
            raise ValueError("a request cannot be prefilled and decoded in the same step")
        if self.max_batch_size is not None and len(self._running) + len(prefill) > self.max_batch_size:
            raise ValueError(f"batch would exceed max_batch_size={self.max_batch_size}")
        result = StepResult(outputs=[], duration_s=0.0)
        pre = self._prefill_forward(prefill, result) if prefill else None
        dec = self._decode_forward(decode, result) if decode else None  # commits the shared KV last
        outputs: list[RequestOutput] = []
        if dec is not None:
            outputs += self._accept_decode(*dec)
        if pre is not None:
            outputs += self._accept_prefill(prefill, pre[1])
        self._retire_finished(pre[0] if pre else None, prefill)
        result.outputs = outputs
        result.by_id = {o.request_id: o for o in outputs}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        result.duration_s = time.perf_counter() - start
        return result

    def generate_one(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        *,
        stop: StopCondition | None = None,
        sampling: SamplingParams | None = None,
    ) -> GenerationOutput:
        """Run one request alone to completion through the same engine (the sequential baseline)."""
        rid = f"__generate_one_{next(self._anon)}"
        self.add_request(rid, prompt_ids, max_new_tokens=max_new_tokens, stop=stop, sampling=sampling)
        start = time.perf_counter()
        steps, tokens, text, reason = 0, [], [], None
        prefill, decode = [rid], []
        while reason is None:
            out = self.step(prefill, decode).by_id[rid]
            if out.error is not None:
                raise ValueError(out.error)
            steps += 1
            tokens.append(out.token_id)
            text.append(out.text_delta)
            reason = out.finish_reason
            prefill, decode = [], [rid]
        return GenerationOutput(tokens, "".join(text), reason, steps, time.perf_counter() - start)

    # -- internals -----------------------------------------------------------------------------
    def _take(self, ids: Sequence[str], pool: dict[str, _Request], state: str) -> list[_Request]:
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate request ids in one step")
        missing = [i for i in ids if i not in pool]
        if missing:
            raise KeyError(f"not {state}: {missing}")
        return [pool[i] for i in ids]

    def _new_kv(self) -> BatchKV:
        layers, kv_heads, head_dim = self._kv_shape
        return BatchKV(layers, self.device, self.loaded.dtype, kv_heads=kv_heads, head_dim=head_dim)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache):
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            self._forward_kwargs["cache"]: cache,
            "use_cache": True,
        }
        if self._forward_kwargs.get("logits_to_keep"):
            kwargs[self._forward_kwargs["logits_to_keep"]] = 1
        out = self.model(**kwargs)
        return out.logits[:, -1, :]

    def _decode_forward(self, reqs: list[_Request], result: StepResult) -> tuple[list[_Request], torch.Tensor]:
        """One token for each of ``reqs`` in one forward over the shared cache (all rows, or a subset)."""
        row_of = {rid: i for i, rid in enumerate(self._rows)}
        if len(reqs) == len(self._rows):
            rows, ordered = None, [self._running[rid] for rid in self._rows]  # fast path: the whole batch
        else:
            rows = sorted(row_of[r.request_id] for r in reqs)
            ordered = [self._running[self._rows[i]] for i in rows]
        dev = self.device
        columns = self._kv.length  # every decoded row attends over the batch's padded KV length
        input_ids = torch.tensor([[r.next_input] for r in ordered], dtype=torch.long, device=dev)
        positions = torch.tensor([[r.context_len] for r in ordered], dtype=torch.long, device=dev)
        try:
            mask = self._kv.attention_mask(rows, 1)
            cache = self._kv.forward_cache(rows, 1)
            logits = self._forward(input_ids, mask, positions, cache)
        except BaseException:
            self._kv.abort()
            raise
        self._kv.commit()
        result.num_decode_seqs = len(ordered)
        result.decode_kv_columns = self._kv.length
        result.sum_decode_context = sum(r.context_len for r in ordered)
        result.padded_decode_context = len(ordered) * columns
        return ordered, logits

    def _accept_decode(self, ordered: list[_Request], logits: torch.Tensor) -> list[RequestOutput]:
        tokens, errors = sample_rows(logits.float(), [r.sampling for r in ordered], [r.generator for r in ordered])
        outputs = []
        for i, (req, token) in enumerate(zip(ordered, tokens)):
            req.context_len += 1
            outputs.append(self._fail(req, errors[i]) if i in errors else self._emit(req, token))
        return outputs

    def _prefill_forward(self, reqs: list[_Request], result: StepResult) -> tuple[BatchKV, torch.Tensor]:
        """All prompts in one left-padded forward into a fresh cache, merged into the batch later."""
        if self.prefix_store is not None:  # reuse stored prompt prefixes, compute only the rest
            return prefill_with_store(self, reqs, result)
        lengths = [len(r.prompt_ids) for r in reqs]
        width = max(lengths)
        ids = torch.full((len(reqs), width), self.pad_token_id, dtype=torch.long)
        real = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding: every prompt ends in the last column
            ids[i, width - lengths[i] :] = torch.tensor(r.prompt_ids)
            real[i, width - lengths[i] :] = 1
        ids, real = ids.to(self.device), real.to(self.device)
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)  # each prompt starts at position 0
        kv = self._new_kv()
        kv.reset_rows(len(reqs))
        cache = kv.forward_cache(None, width)
        logits = self._forward(ids, real, positions, cache)
        kv.commit(real)
        result.num_prefill_seqs = len(reqs)
        result.num_prefill_tokens = sum(lengths)
        result.sum_prefill_context = 0  # no prefix caching or chunking: nothing cached before the prompt
        result.padded_prefill_tokens = len(reqs) * width
        return kv, logits

    def _accept_prefill(self, reqs: list[_Request], logits: torch.Tensor) -> list[RequestOutput]:
        tokens, errors = sample_rows(logits.float(), [r.sampling for r in reqs], [r.generator for r in reqs])
        outputs = []
        for i, (req, token) in enumerate(zip(reqs, tokens)):
            req.context_len = len(req.prompt_ids)
            del self._waiting[req.request_id]
            self._running[req.request_id] = req
            outputs.append(self._fail(req, errors[i]) if i in errors else self._emit(req, token))
        return outputs

    def _fail(self, req: _Request, error: str) -> RequestOutput:
        """The request cannot go on (its row could not be sampled): it leaves at the step's end."""
        req.error = error
        return RequestOutput(request_id=req.request_id, token_id=-1, text_delta="", finished=True,
                             finish_reason="error", num_generated=len(req.stream.token_ids), error=error)

    def _emit(self, req: _Request, token: int) -> RequestOutput:
        delta = req.stream.append(token)
        req.next_input = token
        return RequestOutput(
            request_id=req.request_id,
            token_id=token,
            text_delta=delta,
            finished=req.stream.finished,
            finish_reason=req.stream.finish_reason,
            num_generated=len(req.stream.token_ids),
        )

    def _retire_finished(self, new_kv: BatchKV | None, prefilled: list[_Request]) -> None:
        """Drop finished requests and merge this step's prefilled survivors into the batch."""
        for rid in [rid for rid, r in self._running.items() if r.done]:
            del self._running[rid]
        self._compact()
        if new_kv is not None:
            keep = [i for i, r in enumerate(prefilled) if not r.done]
            new_kv.keep(keep)
            self._kv.extend(new_kv)
            self._rows += [prefilled[i].request_id for i in keep]

    def _compact(self) -> None:
        alive = [i for i, rid in enumerate(self._rows) if rid in self._running]
        if len(alive) != len(self._rows):
            order = hole_filling_order(alive)  # the last rows fill the holes: a leave costs what it moves
            self._kv.keep(order)
            self._rows = [self._rows[i] for i in order]


def _forward_kwarg_names(model: torch.nn.Module) -> dict[str, str | None]:
    """Keyword names of the cache / logits-slicing arguments, which differ across transformers versions."""
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in params), None)
    return {"cache": cache, "logits_to_keep": keep}


def _kv_shape(config) -> tuple[int, int | None, int | None]:
    """(layers, kv_heads, head_dim) of the KV cache; the last two None when the config is unusual."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(text.num_hidden_layers)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
    if getattr(text, "model_type", "") not in _PLAIN_KV_MODELS:
        return layers, None, None  # let the first write size the buffers
    return layers, kv_heads, head_dim


# Model families whose per-layer KV is plainly [batch, num_key_value_heads, seq, head_dim].
_PLAIN_KV_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "gpt_neox", "olmo", "granite"})


def _default_eos(config, tokenizer) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (getattr(config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        ids += list(source) if isinstance(source, (list, tuple)) else [source]
    return tuple(dict.fromkeys(int(i) for i in ids))
