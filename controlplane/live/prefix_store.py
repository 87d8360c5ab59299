"""Prefix reuse on live workers: block hashes of real token ids, and a bounded LRU of prompt KV.

``block_hashes(ids, block_tokens)`` hashes whole blocks of token ids, each hash chained to the
one before (equal hash = equal prefix up to and including that block), as vLLM's automatic
prefix caching does. The live driver puts them on ``Request.hash_ids`` so the core's
``prefix-cache`` plugin and the routers see live prefixes exactly as they see a Mooncake trace's;
the engine uses the same hashes for its own store, within the request's tenant unless the run shares prefixes
across tenants (`controlplane.prefix_scope`: its ``scoped_hashes``, as the plugin keys its blocks), so one tenant's
prompt KV never serves (and never times) another's.

``PrefixKVStore`` keeps, per engine (one per worker), the keys and values of recently prefilled
prompts, bounded by ``capacity_tokens`` and evicted least recently used first. ``match(ids)``
returns the longest stored prefix of whole blocks (never the whole prompt: the last token is
always computed, its logits give the first output token) and its KV, which the engine loads into
the prefill's cache so that only the rest of the prompt is computed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.prefix_scope import scoped_hashes

__all__ = ["PrefixKVStore", "PrefixMatch", "block_hashes"]

_MASK = (1 << 63) - 1


def block_hashes(ids: Sequence[int], block_tokens: int) -> tuple[int, ...]:
    """Chained hashes of the whole ``block_tokens``-token blocks of ``ids`` (a partial last block has none)."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be at least 1, got {block_tokens}")
    out = []
    prev = b""
    for start in range(0, len(ids) - block_tokens + 1, block_tokens):
        h = hashlib.blake2b(prev, digest_size=8)
        h.update(b",".join(str(int(t)).encode() for t in ids[start:start + block_tokens]))
        prev = h.digest()
        out.append(int.from_bytes(prev, "little") & _MASK)
    return tuple(out)


@dataclass
class _Entry:
    hashes: tuple[int, ...]
    keys: list[Any]  # per layer: [kv_heads, tokens, head_dim]
    values: list[Any]

    @property
    def tokens(self) -> int:
        return self.keys[0].shape[-2] if self.keys else 0


@dataclass(frozen=True)
class PrefixMatch:
    tokens: int  # prompt tokens whose KV is reused
    keys: list[Any]  # per layer: [kv_heads, tokens, head_dim] (views; copy before writing)
    values: list[Any]


class PrefixKVStore:
    """Bounded LRU of prompt KV by chained block hash."""

    def __init__(self, capacity_tokens: int, block_tokens: int) -> None:
        if capacity_tokens < 0 or block_tokens < 1:
            raise ValueError("capacity_tokens must be >= 0 and block_tokens >= 1")
        self.capacity_tokens = capacity_tokens
        self.block_tokens = block_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # entry id -> entry, LRU first
        self._index: dict[int, tuple[int, int]] = {}  # block hash -> (entry id, blocks through it)
        self._next = 0
        self.tokens = 0
        self.lookups = 0
        self.hit_tokens = 0
        self.lookup_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _hashes(self, ids: Sequence[int], scope: str | None) -> tuple[int, ...]:
        return scoped_hashes(block_hashes(ids, self.block_tokens), scope)

    def match(self, ids: Sequence[int], scope: str | None = None) -> PrefixMatch | None:
        """The longest stored whole-block prefix of ``ids`` in ``scope`` (at most ``len(ids) - 1`` tokens)."""
        self.lookups += 1
        self.lookup_tokens += len(ids)
        best: tuple[int, int] | None = None
        for h in self._hashes(ids, scope):
            hit = self._index.get(h)
            if hit is None:
                break
            best = hit
        if best is None:
            return None
        eid, blocks = best
        n = min(blocks * self.block_tokens, len(ids) - 1)
        if n <= 0:
            return None
        entry = self._entries[eid]
        self._entries.move_to_end(eid)
        self.hit_tokens += n
        return PrefixMatch(n, [k[:, :n] for k in entry.keys], [v[:, :n] for v in entry.values])

    def store(self, ids: Sequence[int], keys: list[Any], values: list[Any], scope: str | None = None) -> bool:
        """Keep the KV of ``ids``' whole blocks (``keys``/``values`` per layer cover at least them) in ``scope``
        (a tenant: only its own later prompts find them; ``None``: every unscoped prompt).

        Nothing is stored when no block is new (a stored entry already covers this prefix) or
        when one prompt's blocks exceed the capacity.
        """
        hashes = self._hashes(ids, scope)
        n = len(hashes) * self.block_tokens
        if not hashes or n > self.capacity_tokens:
            return False
        covered = 0
        for h in hashes:
            if h not in self._index:
                break
            covered += 1
        if covered == len(hashes):
            self._entries.move_to_end(self._index[hashes[-1]][0])
            return False
        eid = self._next
        self._next += 1
        entry = _Entry(hashes, [k[:, :n].clone() for k in keys], [v[:, :n].clone() for v in values])
        self._entries[eid] = entry
        for i, h in enumerate(hashes, 1):
            self._index[h] = (eid, i)  # the newest entry serves every prefix it holds
        self.tokens += n
        while self.tokens > self.capacity_tokens and self._entries:
            self._evict()
        return True

    def _evict(self) -> None:
        eid, entry = self._entries.popitem(last=False)
        self.tokens -= entry.tokens
        for i, h in enumerate(entry.hashes, 1):
            if self._index.get(h) == (eid, i):
                del self._index[h]
        # Blocks this entry served may be held by another entry too: point them there.
        for other_id, other in self._entries.items():
            for i, h in enumerate(other.hashes, 1):
                if h not in self._index and h in entry.hashes:
                    self._index[h] = (other_id, i)

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self.tokens = 0


def prefill_with_store(engine: Any, reqs: list, result: Any):
    """The engine's prefill forward when it has a prefix store: each prompt's longest stored
    prefix is loaded into the new cache and only the rest is computed; every prompt's KV is
    stored afterwards. Returns ``(BatchKV, last logits)`` like the engine's own prefill.

    Layout: row ``i`` reuses ``c_i`` tokens, right-aligned to end at column ``P = max c``; its
    ``s_i`` remaining tokens are left-padded into the ``W = max s`` new columns after ``P``, so
    every row's last prompt token is in the last column (positions continue from ``c_i``).
    """
    import torch

    store: PrefixKVStore = engine.prefix_store
    matches = [store.match(r.prompt_ids, r.prefix_scope) for r in reqs]
    cached = [m.tokens if m is not None else 0 for m in matches]
    rest = [len(r.prompt_ids) - c for r, c in zip(reqs, cached)]
    p, w = max(cached), max(rest)
    ids = torch.full((len(reqs), w), engine.pad_token_id, dtype=torch.long)
    real = torch.zeros((len(reqs), w), dtype=torch.long)
    for i, r in enumerate(reqs):
        ids[i, w - rest[i]:] = torch.tensor(r.prompt_ids[cached[i]:])
        real[i, w - rest[i]:] = 1
    ids, real = ids.to(engine.device), real.to(engine.device)
    start = torch.tensor(cached, dtype=torch.long, device=engine.device)[:, None]
    positions = (start + real.cumsum(dim=1) - 1).clamp(min=0)
    kv = engine._new_kv()
    if p:
        kv.load_prefixes([(m.keys, m.values) if m is not None else None for m in matches], p)
    else:
        kv.reset_rows(len(reqs))
    mask = torch.cat([kv.mask[:, :p], real], dim=1)
    cache = kv.forward_cache(None, w)
    logits = engine._forward(ids, mask, positions, cache)
    kv.commit(real)
    for i, r in enumerate(reqs):
        keys, values = kv.row_tokens(i)
        store.store(r.prompt_ids, keys, values, r.prefix_scope)
    result.num_prefill_seqs = len(reqs)
    result.num_prefill_tokens = sum(rest)  # computed; the reused ones are the context below
    result.sum_prefill_context = sum(cached)
    result.padded_prefill_tokens = len(reqs) * w
    return kv, logits
