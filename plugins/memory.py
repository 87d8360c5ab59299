"""GPU memory planning: batch and KV-cache limits per replica."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.decisions import MemoryPlan

UNLIMITED_BLOCKS = 1 << 30


class StaticMemory(Plugin):
    """Limits from the deployment config; KV blocks from the config, the device or unlimited.

    On out-of-memory, halve the batch limits (never below one sequence).
    """

    name = "static-memory"

    @hookimpl
    def cp_plan_memory(self, ctx, worker, trigger):
        d = ctx.config.cluster.deployment(worker.model)
        if trigger == "out_of_memory":
            seqs = max(1, worker.max_num_seqs // 2)
            tokens = max(1, worker.max_batch_tokens // 2)
            return MemoryPlan(seqs, tokens, worker.num_kv_blocks, worker.kv_block_size,
                              f"out of memory: halved limits to {seqs} sequences, {tokens} tokens")
        blocks = d.num_kv_blocks or UNLIMITED_BLOCKS
        why = f"{blocks} KV blocks from config" if d.num_kv_blocks else "no KV budget configured: unlimited"
        return MemoryPlan(d.max_num_seqs, d.max_batch_tokens, blocks, d.kv_block_size, why)
