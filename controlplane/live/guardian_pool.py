"""Live guardians on workers of their own: one thread pool per declared guardian, ``replicas``
threads wide, so checks of one guardian run in parallel up to its replicas and queue beyond;
several guardians check one request at once. A check that exceeds the guardian's ``timeout_s``
answers ``timeout`` (its thread finishes in the background, its verdict is dropped); one that
raises answers ``error`` with the exception. Both are then read through the guardian's
``on_error`` (fail open or closed) by the core.

Guardian models run in the daemon's own process (CPU or the configured device), beside the
generation workers' pool; ``placement: shared`` is accepted and means the same here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from controlplane.guardian_config import GuardiansConfig
from controlplane.live.guardian_models import GuardianModel, load_guardian

__all__ = ["LiveGuardianPool"]

log = logging.getLogger(__name__)


@dataclass
class _Stats:
    checks: int = 0
    timeouts: int = 0
    errors: int = 0
    busy_s: float = 0.0


class LiveGuardianPool:
    def __init__(self, config: GuardiansConfig) -> None:
        self.config = config
        self.models: dict[str, GuardianModel] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self.stats: dict[str, _Stats] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.models

    async def start(self) -> None:
        """Load every declared guardian (in a thread: models take a while)."""
        for spec in self.config.models:
            self.models[spec.name] = await asyncio.to_thread(load_guardian, spec)
            self._executors[spec.name] = ThreadPoolExecutor(spec.replicas, thread_name_prefix=f"guardian-{spec.name}")
            self.stats[spec.name] = _Stats()

    async def check(self, name: str, text: str | None) -> tuple[str, float | None, str]:
        """(verdict, score, reason) of guardian ``name`` on ``text``."""
        model = self.models[name]
        stats = self.stats[name]
        stats.checks += 1
        if text is None:
            return "error", None, "no text to check (the request was given as token ids)"
        loop = asyncio.get_running_loop()

        def run() -> tuple[tuple[str, float, str], float]:
            t0 = time.perf_counter()
            out = model.check(text)
            return out, time.perf_counter() - t0

        try:
            (verdict, score, reason), busy = await asyncio.wait_for(
                loop.run_in_executor(self._executors[name], run), model.spec.timeout_s)
        except TimeoutError:
            stats.timeouts += 1
            return "timeout", None, f"no verdict within {model.spec.timeout_s:g} s"
        except Exception as exc:  # a guardian that fails is isolated: its check answers "error"
            stats.errors += 1
            log.warning("guardian %s failed: %s", name, exc)
            return "error", None, f"{type(exc).__name__}: {exc}"
        stats.busy_s += busy
        return verdict, round(score, 6), reason

    def summary(self) -> dict[str, Any]:
        return {name: vars(s) | {"busy_s": round(s.busy_s, 6)} for name, s in self.stats.items()}

    def close(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
