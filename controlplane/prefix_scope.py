"""Whose prompt prefixes may serve whom: the tenant in the prefix-block hash chain.

A prefix-cache hit is observable (``cache_hit: "prefix"`` in the answer, a shorter time to first token), so a
cache shared by every tenant tells one tenant whether another's prompt starts with a guess. As the response
caches do (``shared_across_tenants: false``), prefix blocks are kept apart per tenant by default: a request's
block hashes are mixed with its tenant (`scoped_hashes`) before a cache or a router looks them up, in the
simulator (the ``prefix-cache`` plugin on a trace's ``hash_ids``), in the live control plane (the same plugin on
the token hashes the live driver puts on requests) and in the live workers' KV store alike. Requests without a
tenant share one space and keep their hashes as they are (`prefix_scope` is ``None``), so an untenanted run is
unchanged. ``shared_across_tenants: true`` in the ``prefix-cache`` settings shares blocks across tenants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["prefix_scope", "prefixes_shared_across_tenants", "scoped_hashes"]

_MASK = (1 << 63) - 1


def prefix_scope(tenant: str | None, shared_across_tenants: bool) -> str | None:
    """The scope a request's prefix blocks are hashed in: its tenant, or ``None`` (one space for all) when
    blocks are shared across tenants or the request has no tenant."""
    return None if shared_across_tenants or not tenant else tenant


def prefixes_shared_across_tenants(plugin_settings: Mapping[str, Any]) -> bool:
    """Whether a run's ``plugins.settings`` share prefix blocks across tenants (``prefix-cache``'s
    ``shared_across_tenants: true``); the live workers' KV store follows it as the plugin does."""
    return (plugin_settings.get("prefix-cache") or {}).get("shared_across_tenants") is True


def scoped_hashes(hashes: Sequence[int], scope: str | None) -> tuple[int, ...]:
    """``hashes`` (chained prefix-block hashes) within ``scope``: each mixed with the scope, so that equal
    results mean an equal prefix in the same scope; unchanged when ``scope`` is ``None``."""
    hashes = tuple(hashes)
    return hashes if scope is None or not hashes else _scoped(hashes, scope)


@lru_cache(maxsize=4096)  # a router peeks at every replica for one request: hash its blocks once
def _scoped(hashes: tuple[int, ...], scope: str) -> tuple[int, ...]:
    seed = hashlib.blake2b(scope.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    out = []
    for h in hashes:
        d = hashlib.blake2b(seed + str(int(h)).encode(), digest_size=8).digest()
        out.append(int.from_bytes(d, "little") & _MASK)
    return tuple(out)
