"""GPU memory planning from a live worker's real device memory.

A live worker reports its device facts when it becomes ready (``WorkerReady.memory``, built by
``controlplane.live.device_facts.device_facts``): free and total bytes (``torch.cuda.mem_get_info`` on a
GPU, available host memory on the CPU), torch's allocator counters, the model's weight bytes and
the KV-cache bytes one token costs (``controlplane.hardware.kv.kv_bytes_per_token``). This plugin
turns them into the worker's limits: the KV-cache token budget is ``safety`` x the free memory
over the bytes per token, the batch size is that budget over an average sequence length, and an
out-of-memory iteration halves the batch. Simulated workers report no facts, so the plugin defers
and ``static-memory`` (or the next memory plugin) decides.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import MemoryPlan
from controlplane.events import WorkerChanged

log = logging.getLogger(__name__)

_GIB = 2**30
_MIB = 2**20


def _size(n: int) -> str:
    """Bytes in GiB (2 decimals), or in MiB (3 digits) below a tenth of a GiB (a small share of host memory read
    "0.00 GiB")."""
    return f"{n / _GIB:.2f} GiB" if n >= _GIB // 10 else f"{n / _MIB:.3g} MiB"


def _share(x: float) -> str:
    """A share in percent with the digits a small one needs (0.0001: "0.01%", not "0%")."""
    return f"{x * 100:.3g}%"


class DeviceMemory(Plugin):
    """Batch size, token budget and KV blocks from the free memory a live worker measured."""

    name = "device-memory"

    class Settings(PluginSettings):
        # Share of the free memory the KV cache may fill; the rest is for activations, the
        # allocator's fragmentation and the padding of the live backend's KV layout.
        safety: float = Field(0.8, gt=0, le=1)
        # CPU workers: share of the host's available memory that all CPU workers' KV caches may
        # use together (the host also runs the OS, the daemon and other processes).
        host_memory_fraction: float = Field(0.5, gt=0, le=1)
        # Tokens a sequence holds on average, to turn the token budget into a batch size;
        # None: the deployment's max_model_len, else the worker's max_seq_len.
        avg_seq_len: int | None = Field(None, ge=1)
        # Never exceed the deployment's configured max_num_seqs / max_batch_tokens.
        cap_to_config: bool = True

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._facts: dict[str, dict[str, Any]] = {}  # worker id -> the facts it reported when ready

    @hookimpl
    def cp_on_event(self, event: Any) -> None:
        if type(event) is not WorkerChanged:
            return
        if event.kind == "ready" and event.detail and "free_bytes" in event.detail:
            self._facts[event.worker_id] = dict(event.detail)
        elif event.kind in ("failed", "stopped"):
            self._facts.pop(event.worker_id, None)

    @hookimpl
    def cp_plan_memory(self, ctx, worker, trigger):
        facts = self._facts.get(worker.worker_id)
        if facts is None:
            return None  # no device facts (simulated worker): the next memory plugin decides
        if trigger == "out_of_memory":
            seqs = max(1, worker.max_num_seqs // 2)
            tokens = max(1, worker.max_batch_tokens // 2)
            return MemoryPlan(
                seqs, tokens, worker.num_kv_blocks, worker.kv_block_size,
                f"out of memory on {facts.get('device', 'the device')}: halved the batch from "
                f"{worker.max_num_seqs} to {seqs} sequences and {worker.max_batch_tokens} to {tokens} tokens",
            )
        deployment = ctx.config.cluster.deployment(worker.model)
        return self.plan(facts, deployment, num_cpu_workers=self._cpu_workers(ctx, worker))

    def plan(self, facts: dict[str, Any], deployment: Any, *, num_cpu_workers: int = 1) -> MemoryPlan | None:
        """The limits for a worker that reported ``facts``, serving ``deployment``; None without
        ``kv_bytes_per_token`` in the facts."""
        s = self.settings
        per_token = int(facts.get("kv_bytes_per_token") or 0)
        if per_token <= 0:
            return None  # the worker did not say what a token costs: the next memory plugin decides
        device = str(facts.get("device", "cpu"))
        free = int(facts.get("free_bytes", 0))
        if device.startswith("cuda"):
            # What the driver reports free, plus what torch's caching allocator holds unused.
            cached = max(0, int(facts.get("reserved_bytes", 0)) - int(facts.get("allocated_bytes", 0)))
            usable = free + cached
            where = f"{device}: {_size(free)} free + {_size(cached)} cached by torch"
        else:
            n = max(1, num_cpu_workers)
            usable = int(free * s.host_memory_fraction / n)
            where = (f"{device}: {_size(free)} host memory available, {_share(s.host_memory_fraction)} "
                     f"shared by {n} CPU worker{'s' if n > 1 else ''}")
        block = deployment.kv_block_size
        fitting = int(usable * s.safety) // per_token  # tokens the budget holds; the cache holds whole blocks
        blocks = max(1, fitting // block)
        kv_tokens = blocks * block
        avg = s.avg_seq_len or deployment.max_model_len or int(facts.get("max_seq_len") or 2048)
        seqs = max(1, kv_tokens // avg)
        tokens = kv_tokens  # (an iteration's tokens are all in the cache: never more than it holds)
        capped = ""
        if s.cap_to_config:
            if seqs > deployment.max_num_seqs:
                seqs, capped = deployment.max_num_seqs, " (the configured cap)"
            tokens = min(tokens, deployment.max_batch_tokens)
        reason = (
            f"{where}; {_share(s.safety)} of {_size(usable)} for the KV cache at {per_token / 1024:.1f} KiB "
            f"per token = {blocks:,} blocks of {block} = {kv_tokens:,} tokens; batch {seqs} sequences{capped} of "
            f"~{avg} tokens, {tokens:,} tokens per iteration"
        )
        if fitting < block:
            reason = f"not even one KV block fits: {reason}"
        longest = deployment.max_model_len or int(facts.get("max_seq_len") or 0)
        if kv_tokens < longest:
            short = (f"the KV cache cannot hold one max_model_len sequence ({longest:,} tokens): a request of more "
                     f"than {kv_tokens:,} tokens (prompt + max_tokens) is refused (does_not_fit); give the worker "
                     "more memory (safety, host_memory_fraction) or lower max_model_len")
            reason += f"; {short}"
            log.warning("model %s on %s: %s", deployment.name, device, short)
        return MemoryPlan(seqs, tokens, blocks, block, reason)

    def _cpu_workers(self, ctx: Any, worker: Any) -> int:
        """Workers that may share this host's memory: alive and not known to be on a GPU."""
        n = 0
        for w in ctx.workers.values():
            if not w.is_alive and w is not worker:
                continue
            device = str(self._facts.get(w.worker_id, {}).get("device", "cpu"))
            if not device.startswith("cuda"):
                n += 1
        return max(1, n)

