"""GPU memory planning: batch and KV-cache limits per replica."""

from __future__ import annotations

from pydantic import Field

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.decisions import MemoryPlan
from controlplane.hardware.memory_plan import known_model, plan_replica_memory, planned_precision
from controlplane.types import UNLIMITED_KV_BLOCKS

class StaticMemory(Plugin):
    """Limits from the deployment config; KV blocks from the config, else from the model's memory plan.

    With a known model (``model_spec`` or the latency settings' ``model``) and GPU, the KV pool is
    what ``controlplane.hardware.memory_plan.plan_replica_memory`` leaves after the weights in the deployment's
    precision (Vidur's planner: Llama-2-70B on A100-80GB, TP2, fp16 gives 3,328 blocks of 16);
    an explicit ``num_kv_blocks`` overrides it, and with neither the budget is unlimited (the plan's
    ``UNLIMITED_KV_BLOCKS``; its stored ``memory_plan`` decision says ``"num_kv_blocks": null``).
    On out-of-memory, halve the batch limits (never below one sequence).
    """

    name = "static-memory"

    class Settings(PluginSettings):
        memory_fraction: float = Field(0.9, gt=0, le=1)  # usable device memory (Vidur: 1 - memory margin)
        request_slot_tokens: int | None = Field(4096, ge=1)  # KV pool in whole max-length slots (Vidur); None: block-granular
        include_embeddings: bool = False  # charge embedding / LM-head weights too
        activation_gib: float = Field(0.0, ge=0)  # per-GPU memory reserved for activations

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._plans: dict[str, tuple[int, str]] = {}  # model name -> (KV blocks, reason)

    def kv_blocks(self, deployment) -> tuple[int, str]:
        """(KV blocks per replica, why) for a deployment."""
        d = deployment
        if d.num_kv_blocks:
            return d.num_kv_blocks, f"{d.num_kv_blocks} KV blocks from config"
        cached = self._plans.get(d.name)
        if cached is not None:
            return cached
        model = known_model(d)
        if model is None:
            out = UNLIMITED_KV_BLOCKS, "no KV budget configured and no known model: unlimited"
        else:
            s = self.settings
            plan = plan_replica_memory(
                model, d.gpu, tensor_parallel=d.gpus_per_replica, precision=planned_precision(d),
                block_size=d.kv_block_size,
                memory_fraction=s.memory_fraction, activation_bytes=int(s.activation_gib * 2**30) or None,
                request_slot_tokens=s.request_slot_tokens, include_embeddings=s.include_embeddings,
            )
            slot = s.request_slot_tokens
            rounded = (f"; request slots of {slot} tokens rounded up to {plan.blocks_per_slot} whole blocks "
                       f"({plan.blocks_per_slot * d.kv_block_size} tokens)"
                       if slot and plan.blocks_per_slot and slot % d.kv_block_size else "")
            out = plan.num_kv_blocks, (
                f"{plan.num_kv_blocks} KV blocks ({plan.max_kv_tokens} tokens) from the memory plan: {model.name} "
                f"{planned_precision(d)} on {d.gpus_per_replica}x {d.gpu}, {plan.weights_bytes_per_gpu / 2**30:.2f} GiB "
                f"weights per GPU{rounded}"
            )
        self._plans[d.name] = out
        return out

    @hookimpl
    def cp_plan_memory(self, ctx, worker, trigger):
        d = ctx.config.cluster.deployment(worker.model)
        if trigger == "out_of_memory":
            seqs = max(1, worker.max_num_seqs // 2)
            tokens = max(1, worker.max_batch_tokens // 2)
            return MemoryPlan(seqs, tokens, worker.num_kv_blocks, worker.kv_block_size,
                              f"out of memory: halved limits to {seqs} sequences, {tokens} tokens")
        blocks, why = self.kv_blocks(d)
        return MemoryPlan(d.max_num_seqs, d.max_batch_tokens, blocks, d.kv_block_size, why)
