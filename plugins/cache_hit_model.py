"""Response-cache hits for traces without prompt text (most public traces), so that a replay says
what caching would save.

``mode: hash_ids`` (default) uses the trace's real duplicate structure: a request whose prompt
has exactly the block hashes (``hash_ids``, Mooncake) and token count of an earlier answered
request, with the same model, params and tenant (unless ``shared_across_tenants``, as the exact
cache), is a repeated prompt; it hits when its own answer in the trace has the earlier answer's length. A repeat whose traced answer has another length got another
answer (sampling, another ``max_tokens``), so serving the cached one would be wrong: it misses, as
the exact cache never serves an answer cut at another length. The hits are exact: none is wrong.

``mode: rate`` states the cache instead of deriving it: each request without text hits with
probability ``hit_rate``, and a hit is a wrong answer with probability ``false_hit_rate`` (for
example the bound a ``semantic-cache`` honours, or the rate its benchmark measured). A what-if:
it says nothing about which requests repeat. Draws come from ``ctx.rng``.

A hit costs ``lookup_latency_s`` (plus ``embed_latency_s`` when ``kind`` is semantic) instead
of a generation. Requests sampled without a seed (``temperature > 0``, no ``seed``) never hit and are
never remembered, in either mode, as with the text caches. At the run's end the plugin adds its hits
and wrong hits to the summary's ``cache_false_hit_rate`` (``add_false_hits``).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import Field, model_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import CacheHit
from plugins.cache_backends import MemoryStore
from plugins.caching import add_false_hits, is_sampled, key_params, served_from_response_cache

__all__ = ["TraceHitModel"]


def _duplicate_key(request, shared_across_tenants: bool = False) -> str | None:
    if request.prompt is not None or not request.hash_ids:
        return None
    parts = [request.model, request.prompt_tokens, list(request.hash_ids),
             key_params(request.params)]
    if not shared_across_tenants:
        parts.append(request.tenant)  # as the exact cache: a tenant hits only on its own answers
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


class TraceHitModel(Plugin):
    """Cache hits for text-less requests, from repeated ``hash_ids`` or a stated hit rate."""

    name = "trace-hit-model"

    class Settings(PluginSettings):
        mode: Literal["hash_ids", "rate"] = "hash_ids"
        hit_rate: float = Field(0.0, ge=0, le=1)  # rate mode
        false_hit_rate: float = Field(0.0, ge=0, le=1)  # rate mode: wrong answers among hits
        kind: Literal["exact", "semantic"] = "exact"
        lookup_latency_s: float = Field(0.002, ge=0)
        embed_latency_s: float = Field(0.01, ge=0)  # added to a semantic hit
        capacity: int = Field(100_000, ge=1)  # hash_ids mode: remembered prompts (LRU)
        ttl_s: float = Field(3600.0, gt=0)
        shared_across_tenants: bool = False  # hash_ids mode: false, a repeat hits only its own tenant's answer

        @model_validator(mode="after")
        def _rate_needs_a_rate(self):
            if self.mode == "rate" and self.hit_rate == 0:
                raise ValueError("mode 'rate' needs hit_rate > 0 (the share of requests served from the cache)")
            if self.mode == "hash_ids" and (self.hit_rate or self.false_hit_rate):
                raise ValueError("hit_rate and false_hit_rate apply to mode 'rate'; mode 'hash_ids' "
                                 "derives hits from repeated prompts")
            if self.mode == "rate" and "shared_across_tenants" in self.model_fields_set:
                raise ValueError("shared_across_tenants applies to mode 'hash_ids'; mode 'rate' states the hits")
            return self

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.store = MemoryStore(max_entries=self.settings.capacity)
        self.hits = 0
        self.false_hits = 0

    def _latency(self) -> float:
        s = self.settings
        return s.lookup_latency_s + (s.embed_latency_s if s.kind == "semantic" else 0.0)

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        if request.prompt is not None:
            return None  # text: the real caches decide
        if is_sampled(request):
            return None  # temperature > 0 without a seed: not a reproducible answer, never served
        s = self.settings
        if s.mode == "rate":
            if ctx.rng.random() >= s.hit_rate:
                return None
            wrong = s.false_hit_rate > 0 and ctx.rng.random() < s.false_hit_rate
            self.hits += 1
            self.false_hits += int(wrong)
            return CacheHit(s.kind, self._latency(), None, None,
                            f"stated hit rate {s.hit_rate:g}" + (" (a wrong answer)" if wrong else ""),
                            output_tokens=request.max_output_tokens)
        key = _duplicate_key(request, s.shared_across_tenants)
        raw = None if key is None else self.store.get(key, now_s=ctx.now_s)
        if raw is None or orjson.loads(raw) != request.max_output_tokens:
            return None  # not repeated, or the trace says this repeat got another answer
        self.hits += 1
        return CacheHit(s.kind, self._latency(), None, 1.0, "same prompt blocks (hash_ids) as an earlier request",
                        output_tokens=orjson.loads(raw))

    @hookimpl
    def cp_cache_store(self, ctx, request):
        if self.settings.mode != "hash_ids" or served_from_response_cache(request) or is_sampled(request):
            return
        key = _duplicate_key(request, self.settings.shared_across_tenants)
        if key is not None:
            self.store.set(key, orjson.dumps(request.output_tokens), self.settings.ttl_s, now_s=ctx.now_s)

    def cache_report(self) -> dict[str, int]:
        """Hits whose correctness is known, and the wrong ones among them."""
        return {"checked_hits": self.hits, "false_hits": self.false_hits}

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        add_false_hits(summary, self.cache_report())
