"""Response caching: serve repeated prompts without running a model."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import CacheHit
from plugins.cache_backends import CacheStore, RedisUrl, StoreSettings, open_store, release_run, scope_to_run


def normalise_prompt(text: str) -> str:
    """The seed's normalisation: surrounding whitespace trimmed, lower-cased."""
    return text.strip().lower()


def is_sampled(request) -> bool:
    """Sampling (temperature > 0) without a seed: the answer is not reproducible, so it is neither
    cached nor looked up by any response cache."""
    params = dict(request.params)
    return float(params.get("temperature", 0.0) or 0.0) > 0 and params.get("seed") is None


def served_from_response_cache(request) -> bool:
    """Whether ``request`` was answered by a response cache (``exact`` / ``semantic``): such an answer is not
    stored again. A prefix-cache hit (``cache_hit == "prefix"``: prompt KV blocks reused) was still generated,
    and its answer is stored like any other."""
    return request.cache_hit is not None and request.cache_hit != "prefix"


def _by_value(value: Any) -> Any:
    """A param value as the key compares it: a number by its value (an integral float as an int, so ``0``,
    ``0.0`` and ``-0.0`` are one value; a bool stays a bool), a list as a tuple, a dict as its sorted items."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return tuple(_by_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _by_value(v)) for k, v in value.items()))
    return value


def key_params(params) -> list[tuple[str, str]]:
    """A request's generation params as the response caches key on them: sorted (name, repr(value)) pairs,
    with equal requests given equal pairs. A null is no value (left out, as everywhere); numbers compare by
    value (``{"temperature": 0}`` and ``{"temperature": 0.0}`` are one key: the daemon sends floats, a trace
    may send ints); ``stop`` is a set of strings (a lone ``"###"`` is ``["###"]``; order and repeats do not
    matter; an empty list is no stop)."""
    pairs = []
    for name, value in params:
        if name == "stop" and (isinstance(value, str) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))):
            value = tuple(sorted(set((value,) if isinstance(value, str) else value))) or None
        if value is None:
            continue
        pairs.append((str(name), repr(_by_value(value))))
    return sorted(pairs)


def exact_key(request, *, normalise: bool = False, scope: dict[str, Any] | None = None) -> str | None:
    """SHA-256 of (model, prompt, generation params (`key_params`)[, scope]); None when the answer is not
    reproducible: no prompt text, or sampling (temperature > 0) without a seed. ``scope``: what else the
    entry belongs to (``{"tenant": ...}``: a tenant's own answers)."""
    if request.prompt is None or is_sampled(request):
        return None
    prompt = normalise_prompt(request.prompt) if normalise else request.prompt
    parts = [request.model, prompt, key_params(request.params)]
    if scope is not None:
        parts.append(scope)
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def tenant_scope(request, shared_across_tenants: bool) -> dict[str, Any]:
    """The part of a response cache's key that keeps tenants apart: the request's tenant (untenanted
    requests share one space), or nothing when ``shared_across_tenants``."""
    return {} if shared_across_tenants else {"tenant": request.tenant}


#: A live deployment's worker settings that decide its answers' text: which weights (``path``, ``config``,
#: ``preset``; ``seed`` draws random weights) and their number format (``precision``); given at their defaults,
#: they are left out. Not the device, compilation or memory settings.
_WEIGHTS = ("path", "config", "preset", "seed", "precision")
_WORKER_DEFAULTS = {"seed": 0, "precision": "auto"}


def served_model(config: Any, model: str | None) -> dict[str, Any] | None:
    """What identifies the model that answers ``model``'s requests, from the run config's deployment of that
    name: live, its worker's weights (`_WEIGHTS`); the model it stands for (``model_spec``, else the latency
    settings' ``model``), in a simulation too. None for a model the config does not deploy. A response cache
    keys on it, so answers of other weights served under the same name are never served (a daemon restarted
    with ``--preset small-llama`` under the name ``tiny-llama`` read tiny-llama's answers from Redis)."""
    for d in config.cluster.models:
        if d.name == model:
            worker = d.worker or {}
            served = {k: worker[k] for k in _WEIGHTS if k in worker and worker[k] != _WORKER_DEFAULTS.get(k)}
            spec = d.model_spec or (d.latency or {}).get("model")
            if spec is not None:
                served["model_spec"] = spec
            return served
    return None


def cut_key(key: str, max_tokens: int) -> str:
    """Where an answer cut at ``max_tokens`` is kept: beside, not over, the answer that stopped by itself."""
    return f"{key}/max{max_tokens}"


def add_false_hits(summary: dict[str, Any], report: dict[str, int]) -> None:
    """Add a cache's ``cache_report()`` (hits whose correctness is known, and the wrong ones) to a run
    summary, at ``cp_run_finished`` (sim and live alike): ``cache_checked_hits``, ``cache_false_hits``
    and their ratio ``cache_false_hit_rate``, summed over the caches that report; the rate is None
    while none was checked."""
    checked = report["checked_hits"] + summary.get("cache_checked_hits", 0)
    wrong = report["false_hits"] + summary.get("cache_false_hits", 0)
    summary.update(cache_checked_hits=checked, cache_false_hits=wrong,
                   cache_false_hit_rate=round(wrong / checked, 6) if checked else None)


#: Settings of each backend that the other ignores (warned of when set).
_MEMORY_ONLY = ("capacity", "max_bytes", "eviction")
_REDIS_ONLY = ("redis_url", "namespace", "retry_after_s", "socket_timeout_s")
_warned: set[tuple[str, str]] = set()
#: Settings that do not change what an entry means: where entries live and how they are reached, the memory
#: backend's bounds, the simulator's hit latency. Every other setting (``normalise``, ``ttl_s``,
#: ``shared_across_tenants``, any added later) is in `settings_fingerprint`.
_NOT_MEANING = frozenset(("backend", "latency_s", *_MEMORY_ONLY, *_REDIS_ONLY))


def settings_fingerprint(settings: Any, ignore: frozenset[str] = _NOT_MEANING) -> str:
    """12 hex digits of SHA-256 of the settings that decide what a stored entry means (all but ``ignore``).
    A Redis store's namespace carries it, so a cache whose settings changed (a daemon's reload, a restart,
    another daemon configured otherwise) never reads entries written under other ones: it starts cold."""
    meaning = settings.model_dump(mode="json", exclude=set(ignore))
    return hashlib.sha256(orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _warn_unused(settings: Any) -> None:
    """One warning per process for each setting given that the chosen backend does not use."""
    unused = _MEMORY_ONLY if settings.backend == "redis" else _REDIS_ONLY
    for name in unused:
        if name in settings.model_fields_set and (settings.backend, name) not in _warned:
            _warned.add((settings.backend, name))
            import logging

            where = "the Redis server's maxmemory / maxmemory-policy bound it" if settings.backend == "redis" \
                else "it applies to backend: redis"
            logging.getLogger(__name__).warning("exact-cache: setting %r is ignored with backend: %s (%s)",
                                                name, settings.backend, where)


class ExactCache(Plugin):
    """Responses keyed by SHA-256 of (model, prompt text, sorted generation params), with a TTL.

    A cached answer is served only when it is the answer this request would get: one that stopped
    by itself (end of sequence, a stop string) within the request's ``max_tokens``, or one cut at
    exactly the same ``max_tokens``. The two are kept apart (an answer cut at 4 tokens is stored
    under the key and its ``max_tokens``), so requests for 4 and for 200 tokens do not overwrite
    each other's answers. The hit counts the answer's real tokens. Requests without prompt text
    (most public traces) never hit (see ``trace-hit-model`` for those). A tenant is served only
    answers computed for it (the tenant is in the key; untenanted requests share one space) unless
    ``shared_across_tenants: true``. The key holds what identifies the served model's weights too
    (`served_model`): another model served under the same name never gets this one's answers.

    ``normalise: true`` keys on the prompt trimmed and lower-cased (the seed design): "Hi " and
    "hi" share an answer. Entries live in a store (``plugins.cache_backends``): in-process by
    default, bounded by ``capacity`` entries and ``max_bytes`` and evicted by ``eviction``
    (lru / lfu / ttl); ``backend: redis`` shares them between daemons.
    """

    name = "exact-cache"

    class Settings(PluginSettings):
        # an error's text shows no input: the Redis URL's password (the validator's message masks it)
        model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

        capacity: int = Field(10_000, ge=1)  # entries (memory backend)
        max_bytes: int | None = Field(None, ge=1)  # key + stored answer bytes (memory backend)
        eviction: Literal["lru", "lfu", "ttl"] = "lru"
        ttl_s: float = Field(3600.0, gt=0)
        latency_s: float = Field(0.002, ge=0)  # lookup + reply time of a hit (simulator; live hits are measured)
        normalise: bool = False  # key on the prompt trimmed and lower-cased
        shared_across_tenants: bool = False  # false: a tenant is served only its own answers
        backend: Literal["memory", "redis"] = "memory"
        redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
        namespace: str = "cp"
        retry_after_s: float = Field(1.0, ge=0)  # redis backend: after an error, calls return at once this long
        socket_timeout_s: float = Field(0.05, gt=0)  # redis backend: the longest a call waits on the socket

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        s = self.settings
        _warn_unused(s)
        self.store: CacheStore = open_store(StoreSettings(
            backend=s.backend, max_entries=s.capacity, max_bytes=s.max_bytes, eviction=s.eviction,
            redis_url=s.redis_url, namespace=s.namespace, retry_after_s=s.retry_after_s,
            socket_timeout_s=s.socket_timeout_s), namespace=f"{self.name}:{settings_fingerprint(s)}")
        self.hits = 0
        self.lookups = 0
        self._served: tuple[Any, dict[str | None, dict[str, Any] | None]] = (None, {})  # (config, by model)

    def _key(self, ctx, request) -> str | None:
        if request.prompt is None:
            return None  # (most traces: no key to build)
        s = self.settings
        config, served = self._served
        if config is not ctx.config:  # (one config a run: looked up once per model)
            config, served = self._served = (ctx.config, {})
        if request.model not in served:
            served[request.model] = served_model(config, request.model)
        scope = {**tenant_scope(request, s.shared_across_tenants), "served": served[request.model]}
        return exact_key(request, normalise=s.normalise, scope=scope)

    @hookimpl
    def cp_run_started(self, ctx):
        scope_to_run(self.store, ctx)  # Redis in a simulation: this run's own entries

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        release_run(self.store, ctx)

    def _fitting(self, raw: bytes | None, wants: int):
        if raw is None:
            return None
        text, tokens, max_tokens = orjson.loads(raw)
        if wants == max_tokens or (tokens < max_tokens and wants >= tokens):
            return text, tokens
        return None  # cut at another length: not the answer this request asks for

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        key = self._key(ctx, request)
        if key is None:
            return None
        self.lookups += 1
        wants = request.max_output_tokens
        found = self._fitting(self.store.get(key, now_s=ctx.now_s), wants)  # an answer that stopped by itself
        if found is None:
            found = self._fitting(self.store.get(cut_key(key, wants), now_s=ctx.now_s), wants)
        if found is None:
            return None
        self.hits += 1
        text, tokens = found
        return CacheHit("exact", self.settings.latency_s, text, 1.0, "exact cache hit (same prompt and parameters)",
                        output_tokens=tokens)

    @hookimpl
    def cp_cache_store(self, ctx, request):
        key = self._key(ctx, request)
        if key is None or served_from_response_cache(request):
            return
        if request.output_tokens >= request.max_output_tokens:  # cut at max_tokens (or ended just there)
            key = cut_key(key, request.max_output_tokens)
        value = orjson.dumps([request.output_text, request.output_tokens, request.max_output_tokens])
        self.store.set(key, value, self.settings.ttl_s, now_s=ctx.now_s)
