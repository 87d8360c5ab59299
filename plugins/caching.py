"""Response caching: serve repeated prompts without running a model."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import CacheHit


class ExactCache(Plugin):
    """LRU cache of responses keyed by (model, prompt text, generation params), with a TTL.

    A cached answer is served only when it is the answer this request would get: one that stopped
    by itself (end of sequence, a stop string) within the request's ``max_tokens``, or one cut at
    exactly the same ``max_tokens``. The hit counts the answer's real tokens. Requests without
    prompt text (most public traces) never hit.
    """

    name = "exact-cache"

    class Settings(PluginSettings):
        capacity: int = Field(10_000, ge=1)
        ttl_s: float = Field(3600.0, gt=0)
        latency_s: float = Field(0.002, ge=0)  # lookup + reply time of a hit

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        # key -> (stored at, text, output tokens, the max_output_tokens it was generated under)
        self._entries: OrderedDict[tuple, tuple[float, str | None, int, int]] = OrderedDict()

    @staticmethod
    def _key(request) -> tuple | None:
        """None when the response is not reproducible: no prompt text, or sampling without a seed."""
        if request.prompt is None:
            return None
        params = dict(request.params)
        if float(params.get("temperature", 0.0) or 0.0) > 0 and params.get("seed") is None:
            return None
        return (request.model, request.prompt, request.params)

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        key = self._key(request)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_s, text, tokens, max_tokens = entry
        if ctx.now_s - stored_s > self.settings.ttl_s:
            del self._entries[key]
            return None
        stopped_by_itself = tokens < max_tokens
        if not (request.max_output_tokens == max_tokens
                or (stopped_by_itself and request.max_output_tokens >= tokens)):
            return None  # cut at another length: not the answer this request asks for
        self._entries.move_to_end(key)
        return CacheHit("exact", self.settings.latency_s, text, 1.0, "same prompt and parameters",
                        output_tokens=tokens)

    @hookimpl
    def cp_cache_store(self, ctx, request):
        key = self._key(request)
        if key is None or request.cache_hit:
            return
        self._entries[key] = (ctx.now_s, request.output_text, request.output_tokens, request.max_output_tokens)
        self._entries.move_to_end(key)
        while len(self._entries) > self.settings.capacity:
            self._entries.popitem(last=False)
