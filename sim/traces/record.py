"""The canonical request record every trace reader yields.

One immutable, slotted record per request keeps a million-row trace cheap and lets the
simulator share records between runs without defensive copies.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class TraceRequest:
    request_id: str          # stable id in the trace: given id, else the 0-based data row index as str
    arrival_s: float         # seconds since trace start (first request of the file at 0.0 for timestamped formats, after transforms it may shift)
    prompt_tokens: int
    output_tokens: int
    model: str | None = None
    tenant: str | None = None
    priority: int = 0
    prompt: str | None = None
    hash_ids: tuple[int, ...] = ()   # prefix KV block hashes (Mooncake), in order
    hash_block_tokens: int | None = None  # tokens per hash block (Mooncake: 512, Bailian: 16)
    params: tuple[tuple[str, object], ...] = ()  # extra generation params (temperature, stop...), as sorted pairs


# --- fast construction -------------------------------------------------------------------
# A frozen dataclass __init__ goes through object.__setattr__ once per field (about 3 us for
# 11 fields); readers build millions of records, so they fill the slots through the slot
# descriptors directly (about 2x faster). The result is an ordinary TraceRequest, equal to one
# built by the constructor (tests check this).

_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TraceRequest))
_SETTERS = tuple(TraceRequest.__dict__[name].__set__ for name in _FIELD_NAMES)
(
    _set_id, _set_arrival, _set_prompt, _set_output, _set_model, _set_tenant,
    _set_priority, _set_text, _set_hash_ids, _set_block, _set_params,
) = _SETTERS
_new = object.__new__


def new_basic(request_id: str, arrival_s: float, prompt_tokens: int, output_tokens: int) -> TraceRequest:
    """Build a record with only the four core fields set (defaults elsewhere), fast."""
    r = _new(TraceRequest)
    _set_id(r, request_id)
    _set_arrival(r, arrival_s)
    _set_prompt(r, prompt_tokens)
    _set_output(r, output_tokens)
    _set_model(r, None)
    _set_tenant(r, None)
    _set_priority(r, 0)
    _set_text(r, None)
    _set_hash_ids(r, ())
    _set_block(r, None)
    _set_params(r, ())
    return r


def new_hashed(
    request_id: str, arrival_s: float, prompt_tokens: int, output_tokens: int,
    hash_ids: tuple[int, ...], hash_block_tokens: int | None,
) -> TraceRequest:
    """Build a record with prefix-block hashes (Mooncake), fast."""
    r = new_basic(request_id, arrival_s, prompt_tokens, output_tokens)
    _set_hash_ids(r, hash_ids)
    _set_block(r, hash_block_tokens)
    return r


def new_labelled(
    request_id: str, arrival_s: float, prompt_tokens: int, output_tokens: int, model: str | None,
    tenant: str | None, hash_ids: tuple[int, ...] = (), hash_block_tokens: int | None = None,
) -> TraceRequest:
    """Build a record with a model and/or tenant (BurstGPT's Model, Bailian's type), fast."""
    r = new_basic(request_id, arrival_s, prompt_tokens, output_tokens)
    _set_model(r, model)
    _set_tenant(r, tenant)
    _set_hash_ids(r, hash_ids)
    _set_block(r, hash_block_tokens)
    return r


def with_arrival(r: TraceRequest, arrival_s: float, request_id: str | None = None) -> TraceRequest:
    """Copy of `r` with a new arrival time (and optionally id); what transforms need, fast."""
    c = _new(TraceRequest)
    _set_id(c, r.request_id if request_id is None else request_id)
    _set_arrival(c, arrival_s)
    _set_prompt(c, r.prompt_tokens)
    _set_output(c, r.output_tokens)
    _set_model(c, r.model)
    _set_tenant(c, r.tenant)
    _set_priority(c, r.priority)
    _set_text(c, r.prompt)
    _set_hash_ids(c, r.hash_ids)
    _set_block(c, r.hash_block_tokens)
    _set_params(c, r.params)
    return c


def freeze(value: Any) -> Any:
    """Make a JSON value hashable (lists -> tuples, objects -> sorted pairs) so records stay hashable."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    return value


def params_from_mapping(params: Mapping[str, Any]) -> tuple[tuple[str, object], ...]:
    """Generation params as the sorted (name, value) pairs TraceRequest.params holds."""
    return tuple(sorted((str(k), freeze(v)) for k, v in params.items()))


def thaw(value: Any) -> Any:
    """Inverse of `freeze` for writing JSON: pair tuples of str keys -> dicts, tuples -> lists."""
    if isinstance(value, tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value):
            return {k: thaw(v) for k, v in value}
        return [thaw(v) for v in value]
    return value
