"""Semantic response cache: serve a paraphrase of a cached prompt its cached answer, with the
share of wrong cached answers kept under a bound the user sets (``max_false_hit_rate``).

Lookup: the prompt is embedded (all-MiniLM-L6-v2), its ``neighbours`` nearest cached prompts
with the same model, exactly the same generation parameters and the same tenant (unless
``shared_across_tenants``) are found (faiss HNSW). A cached
prompt identical to the request's is an exact hit (its answer is this prompt's answer, as the
exact cache would say), served without the learner and never learned from: how often identical
prompts agree says nothing about paraphrases. Otherwise the lookup's score (see
``plugins.semantic_cache_policy``) is compared with a threshold learned online. Above it the
nearest entry's answer is served, except that a sampled fraction (``explore_rate``, drawn from
``ctx.rng``) is treated as a miss: the model runs and, when its answer reaches
``cp_cache_store``, it is compared with the answer the cache would have served.
Below it the model runs too, and its answer is compared with the nearest entry's all the same
(a free outcome). Those outcomes are what the threshold is learned from; an answer a guardian
blocked or has not passed never reaches ``cp_cache_store``, so it is neither cached nor learned.
The verified would-be hits (explored) and the wrong ones among them go into the run summary's
``cache_false_hit_rate`` at the run's end.

In a live run the embedding model is loaded when the run starts, on a thread of its own, not at the
first request on the event loop. Until it is loaded the cache stands aside instead of waiting for it on
the loop: a lookup misses and an answer is neither cached nor learned from (``stats["skipped_loading"]``
counts them; the first is logged).

Answers match when their text is equal after whitespace is collapsed and case folded
(``answers_match``). That suits answers that are labels, ids, tool calls or templated
replies; for free text, two correct answers rarely match word for word, the learner sees them
as disagreements and the cache (correctly, for its evidence) serves little.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import orjson
from pydantic import Field, field_validator

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import CacheHit
from plugins.caching import add_false_hits, exact_key, key_params, served_from_response_cache
from plugins.semantic_cache_index import VectorIndex
from plugins.semantic_cache_policy import ThresholdLearner, consensus_score

__all__ = ["SemanticCache", "answers_match", "answer_id"]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def answers_match(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _norm(a) == _norm(b)


def answer_id(text: str | None) -> str:
    return hashlib.sha1(_norm(text or "").encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Entry:
    prompt: str
    text: str | None
    answer: str  # answer_id(text): neighbours with the same answer vote together
    tokens: int
    max_tokens: int
    stored_s: float


def _fits(entry: _Entry, wants: int) -> bool:
    """Is ``entry``'s answer the one a request for ``wants`` tokens would get? One that stopped by
    itself within ``wants``, or one cut at exactly ``wants`` (as the exact cache decides)."""
    return wants == entry.max_tokens or (entry.tokens < entry.max_tokens and wants >= entry.tokens)


def _slot(entry: _Entry) -> tuple[str, int | None]:
    """One entry per prompt and slot: the answer that stopped by itself (None), and beside it one per
    ``max_tokens`` it was cut at; a new answer for a slot replaces the old one."""
    return entry.prompt, (entry.max_tokens if entry.tokens >= entry.max_tokens else None)


@dataclass(slots=True)
class _Pending:
    """A lookup whose request went to the model; finished when its answer reaches cp_cache_store."""

    vector: np.ndarray | None  # None: not embedded at lookup (nothing cached to compare with)
    score: float | None  # None: no neighbour, nothing to verify
    text: str | None  # the answer the nearest entry would have served
    explored: bool  # a would-be hit treated as a miss


def _partition(request, shared_across_tenants: bool = False) -> str | None:
    """Entries are comparable only with the same model and generation params (prompt excluded), and,
    unless ``shared_across_tenants``, the same tenant (untenanted requests share one partition)."""
    if request.prompt is None:
        return None
    params = key_params(request.params)
    scope = [request.model, params] if shared_across_tenants else [request.model, params, request.tenant]
    return hashlib.sha256(orjson.dumps(scope)).hexdigest()


class SemanticCache(Plugin):
    """Paraphrase hits under a user-set false-hit bound; see the module docstring."""

    name = "semantic-cache"

    class Settings(PluginSettings):
        max_false_hit_rate: float = Field(0.02, gt=0, lt=1)  # the bound on wrong answers among hits
        confidence: float = Field(0.95, gt=0, lt=1)  # of the upper bound tested against it
        band: float = Field(0.05, gt=0, le=1)  # scores just above a threshold must be verified this far up
        explore_rate: float = Field(0.05, ge=0, le=1)  # would-be hits sent to the model to verify
        neighbours: int = Field(10, ge=1, le=100)
        min_similarity: float = Field(0.5, ge=-1, le=1)  # never serve a nearest entry less similar
        temperature: float = Field(0.05, gt=0)  # of the neighbours' vote weights
        window: int = Field(20_000, ge=100)  # verified outcomes the threshold is learned from
        capacity: int = Field(100_000, ge=1)  # entries per partition (model, params, tenant); the oldest goes first
        shared_across_tenants: bool = False  # serve one tenant's cached answers to another
        ttl_s: float = Field(3600.0, gt=0)
        lookup_latency_s: float = Field(0.001, ge=0)  # index search + reply of a hit (simulator; live: measured)
        embed_latency_s: float = Field(0.01, ge=0)  # one prompt's embedding (CPU, MiniLM-L6; simulator)
        device: str = "cpu"  # of the embedding model; one this machine lacks is refused at the start
        hnsw_m: int = Field(32, ge=4)
        ef_search: int = Field(64, ge=1)

        @field_validator("device")
        @classmethod
        def _device_here(cls, device: str) -> str:
            from controlplane.hardware.devices import check_device

            return check_device(device)

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        s = self.settings
        self.learner = ThresholdLearner(s.max_false_hit_rate, s.confidence, s.window, band=s.band)
        self._indexes: dict[str, VectorIndex] = {}
        self._order: dict[str, OrderedDict[int, None]] = {}  # insertion order per partition
        self._slots: dict[str, dict[tuple[str, int | None], int]] = {}  # per partition: _slot -> entry id
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._embedder = None
        self.preloading = None  # live: the thread loading the embedding model (`cp_run_started`)
        self.stats = {"lookups": 0, "hits": 0, "exact_hits": 0, "explored": 0, "explored_verified": 0,
                      "explored_wrong": 0, "outcomes": 0, "skipped_loading": 0}

    def _still_loading(self) -> bool:
        """Live, while `cp_run_started`'s thread is still loading the embedding model: an embedding now would
        wait for the load on the caller's thread (the event loop: 3.5 s for the first cp_cache_store). Counts
        the call and logs the first of a run."""
        if self.preloading is None or not self.preloading.is_alive():
            return False
        if not self.stats["skipped_loading"]:
            import logging

            logging.getLogger(__name__).warning(
                "semantic-cache: the embedding model is still loading: until it is, lookups miss and answers are "
                "not cached (counted in stats['skipped_loading'])")
        self.stats["skipped_loading"] += 1
        return True

    @property
    def embedder(self):
        """The prompt encoder (MiniLM on ``device``); assignable (tests, precomputed vectors)."""
        if self._embedder is None:
            from plugins.semantic_cache_embed import MiniLMEmbedder

            self._embedder = MiniLMEmbedder(self.settings.device)
        return self._embedder

    @embedder.setter
    def embedder(self, value) -> None:
        self._embedder = value

    @hookimpl
    def cp_run_started(self, ctx):
        from plugins.semantic_cache_embed import MiniLMEmbedder, preload

        if ctx.run.mode == "live" and (self._embedder is None or type(self._embedder) is MiniLMEmbedder):
            self.preloading = preload(self.settings.device)  # off the event loop, before any request

    @hookimpl
    def cp_run_finished(self, ctx, summary):
        add_false_hits(summary, self.cache_report())

    def _partition(self, request) -> str | None:
        return _partition(request, self.settings.shared_across_tenants)

    def _index(self, part: str, dim: int) -> VectorIndex:
        index = self._indexes.get(part)
        if index is None:
            index = self._indexes[part] = VectorIndex(dim, hnsw_m=self.settings.hnsw_m, ef_search=self.settings.ef_search)
            self._order[part] = OrderedDict()
            self._slots[part] = {}
        return index

    def _drop(self, part: str, entry_id: int) -> None:
        index = self._indexes[part]
        slot = _slot(index.payload(entry_id))
        if self._slots[part].get(slot) == entry_id:
            del self._slots[part][slot]
        self._order[part].pop(entry_id, None)
        index.remove(entry_id)

    def _neighbours(self, index: VectorIndex, part: str, vector, now_s: float) -> list[tuple[float, _Entry]]:
        out = []
        for sim, entry_id in index.search(vector, self.settings.neighbours):
            e = index.payload(entry_id)
            if now_s - e.stored_s > self.settings.ttl_s:
                self._drop(part, entry_id)
                continue
            out.append((sim, e))
        return out

    def evaluate(self, vector: np.ndarray, request, now_s: float) -> tuple[float | None, _Entry | None, float]:
        """(score, nearest entry, its similarity) for a request's prompt vector; no side effects
        besides dropping expired entries. An entry of the same prompt text comes first, scored 1: the one
        whose length fits the request, if any (answers stopped by themselves and cut at each max_tokens
        are kept side by side)."""
        part = self._partition(request)
        if part is None or part not in self._indexes:
            return None, None, 0.0
        found = self._neighbours(self._indexes[part], part, vector, now_s)
        if not found:
            return None, None, 0.0
        same_prompt = [e for _, e in found if e.prompt == request.prompt]
        if same_prompt:
            return 1.0, next((e for e in same_prompt if _fits(e, request.max_output_tokens)), same_prompt[0]), 1.0
        sims = np.array([s for s, _ in found])
        nearest = found[0][1]
        same = np.array([e.answer == nearest.answer for _, e in found])
        return consensus_score(sims, same, self.settings.temperature), nearest, float(sims[0])

    @hookimpl
    def cp_cache_lookup(self, ctx, request):
        if exact_key(request) is None:  # no text, or an unseeded sample: not a reproducible answer
            return None
        self.stats["lookups"] += 1
        if self._still_loading():
            return None  # (a miss; its answer will not be stored either)
        if self._partition(request) not in self._indexes:
            # nothing cached for this model and params: no neighbour to score, so no embedding yet
            self._remember(request.request_id, _Pending(None, None, None, False))
            return None
        vector = self.embedder.encode([request.prompt])[0]
        score, nearest, sim = self.evaluate(vector, request, ctx.now_s)
        pending = _Pending(vector, score, nearest.text if nearest else None, False)
        fits = nearest is not None and _fits(nearest, request.max_output_tokens)
        threshold = self.learner.threshold
        s = self.settings
        latency_s = s.lookup_latency_s + s.embed_latency_s
        if fits and nearest.prompt == request.prompt:  # (not learned from: see the module docstring)
            self.stats["hits"] += 1
            self.stats["exact_hits"] += 1
            return CacheHit("exact", latency_s, nearest.text, 1.0,
                            "exact cache hit (semantic-cache: the same prompt text was cached)",
                            output_tokens=nearest.tokens)
        if fits and score >= threshold and sim >= s.min_similarity:
            if ctx.rng.random() >= s.explore_rate:
                self.stats["hits"] += 1
                return CacheHit("semantic", latency_s, nearest.text, sim,
                                f"semantic cache hit (score {score:.3f} >= learned threshold {threshold:.3f}, "
                                f"similarity {sim:.3f}, false-hit bound {s.max_false_hit_rate:g})",
                                output_tokens=nearest.tokens)
            pending.explored = True
            self.stats["explored"] += 1
        elif not fits or nearest.prompt == request.prompt:
            pending.score = None  # another length, or the same prompt: not an outcome about paraphrases
        self._remember(request.request_id, pending)
        return None

    def _remember(self, request_id: str, pending: _Pending) -> None:
        self._pending[request_id] = pending
        while len(self._pending) > 100_000:  # requests that never finished (failed, blocked)
            self._pending.popitem(last=False)

    @hookimpl
    def cp_cache_store(self, ctx, request):
        pending = self._pending.pop(request.request_id, None)
        if served_from_response_cache(request):  # (a prefix-cache hit was computed: its answer is stored)
            return
        if exact_key(request) is None or request.output_text is None:
            return  # no answer text (the simulator generates none): nothing to serve or learn from
        if pending is None:
            pending = _Pending(None, None, None, False)
        if pending.vector is None and self._still_loading():
            return  # no vector without waiting for the model: neither cached nor learned from
        if pending.vector is None:
            pending.vector = self.embedder.encode([request.prompt])[0]
        if pending.score is not None:
            correct = answers_match(request.output_text, pending.text)
            self.learner.observe(pending.score, correct)
            self.stats["outcomes"] += 1
            if pending.explored:
                self.stats["explored_verified"] += 1
                self.stats["explored_wrong"] += int(not correct)
        self.add(pending.vector, request, ctx.now_s)

    def add(self, vector: np.ndarray, request, now_s: float) -> None:
        """Cache ``request``'s answer under its prompt vector, replacing the answer in its slot (``_slot``)."""
        part = self._partition(request)
        index = self._index(part, len(vector))
        entry = _Entry(request.prompt, request.output_text, answer_id(request.output_text), request.output_tokens,
                       request.max_output_tokens, now_s)
        old = self._slots[part].get(_slot(entry))
        if old is not None:
            self._drop(part, old)
        (entry_id,) = index.add(vector, [entry])
        self._slots[part][_slot(entry)] = entry_id
        order = self._order[part]
        order[entry_id] = None
        while len(order) > self.settings.capacity:
            self._drop(part, next(iter(order)))

    @property
    def measured_false_hit_rate(self) -> float | None:
        """Wrong answers among verified would-be hits (explored ones): an unbiased estimate of the
        false-hit rate of the hits served, None before any was verified."""
        n = self.stats["explored_verified"]
        return self.stats["explored_wrong"] / n if n else None

    def cache_report(self) -> dict[str, int]:
        """For the run summary: verified would-be hits and the wrong ones among them."""
        return {"checked_hits": self.stats["explored_verified"], "false_hits": self.stats["explored_wrong"]}
