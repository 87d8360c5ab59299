"""API keys of the daemon's inference endpoints: stored as SHA-256 digests, checked in constant time.

The run config lists keys as ``auth.api_keys: [{sha256, tenant, name}]`` (the digest, never the
key: the config is stored in SQL with the run). A request presents ``Authorization: Bearer KEY``;
its digest is compared with every listed digest (`hmac.compare_digest`, all of them, so the time
does not say which one nearly matched), and the matching key's tenant is attached to the request,
where the admission plugins' per-tenant quotas and rate limits see it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from controlplane.config import ApiKey

__all__ = ["KeyRing", "hash_key", "new_key"]


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as ``auth.api_keys[].sha256`` holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (``cp-`` and 43 URL-safe characters, 256 bits)."""
    return "cp-" + secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; `tenant_for` answers which tenant a presented key belongs to."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k.tenant) for k in keys]

    @property
    def enabled(self) -> bool:
        """Whether the inference endpoints need a key."""
        return bool(self._keys)

    def tenant_for(self, presented: str) -> str | None:
        """The tenant of ``presented``, or None when it is no configured key."""
        digest = hashlib.sha256(presented.encode()).digest()
        tenant = None
        for stored, owner in self._keys:  # every comparison runs: no early exit
            if hmac.compare_digest(digest, stored):
                tenant = owner
        return tenant
