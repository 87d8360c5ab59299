"""Shortest-prompt-first batching: an example out-of-tree controlplane plugin.

It only decides prefills: when requests are waiting, it prefills the ones with the fewest prompt
tokens first, within the worker's sequence, token and KV-block limits. When nothing is waiting
(or nothing fits) it returns ``None``, so the next batching plugin, or the built-in
continuous batching, decodes the running requests or rejects what can never fit.
"""

from __future__ import annotations

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import BatchPlan


class ShortestPromptFirst(Plugin):
    """Prefill waiting requests in order of prompt length, shortest first."""

    name = "shortest-prompt-first"

    class Settings(PluginSettings):
        max_prefills: int = Field(64, ge=1)  # prefills in one batch at most

    @hookimpl
    def cp_form_batch(self, ctx, worker):
        if not worker.waiting:
            return None
        limited = worker.has_kv_budget
        free_blocks = worker.num_kv_blocks - worker.num_kv_blocks_used
        budget = worker.max_batch_tokens
        seats = min(self.settings.max_prefills, worker.max_num_seqs - len(worker.running))
        prefill = []
        # sorted() is stable: equal prompts keep their arrival order.
        for r in sorted(worker.waiting, key=lambda r: r.remaining_prefill_tokens):
            n = r.remaining_prefill_tokens
            blocks = worker.blocks_for(r.prefill_target_tokens)
            if len(prefill) >= seats or n > budget or (limited and blocks > free_blocks):
                break  # later ones are longer still
            prefill.append((r, n))
            budget -= n
            free_blocks -= blocks
        if not prefill:
            return None
        shortest = prefill[0][1]
        return BatchPlan(
            prefill=tuple(prefill),
            reason=f"shortest prompt first: {len(prefill)} prefills, shortest {shortest} tokens",
        )
