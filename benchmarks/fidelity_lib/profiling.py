"""The worker's grid profile and the short pace probe taken right before a live run.

`generic_grid` picks batch shapes from the model's limits (the longest prompt and output the
benchmark lets through, the batch sizes the batching policy allows), never from the evaluated
trace. `Probe` times a handful of those shapes on the benchmark's own copy of the worker model:
its time over the grid profile's for the same shapes is the machine's pace at that moment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.config import RunConfig
from sim.traces import TraceRequest


def profile_grid(reqs: list[TraceRequest], max_seq_len: int, repeats: int, *, mixed: bool = True):
    """Batch shapes sized to the slice: its prompt lengths, contexts and batch sizes up to 32; iterations
    that prefill and decode together only when the batching policy runs them (``mixed``)."""
    from controlplane.live.profiling import ProfileGrid

    prompts = np.array([r.prompt_tokens for r in reqs])
    contexts = np.array([r.prompt_tokens + r.output_tokens for r in reqs])
    tokens = sorted({int(np.percentile(prompts, q)) for q in (10, 50, 90)} | {int(prompts.max())} | {0})
    ctx = sorted({max(8, int(np.percentile(contexts, 50))), max(8, int(contexts.max()))})
    ctx = [c for c in ctx if c + 200 < max_seq_len] or [32]
    return ProfileGrid(prefill_tokens=tuple(tokens), prefill_seqs=(1, 4), decode_batch_sizes=(0, 1, 2, 4, 8, 16, 32),
                       context_lens=tuple(ctx), repeats=repeats, warmup=1, mixed=mixed, interleave=True, spread=True)


def policy_mixes(cfg: RunConfig) -> bool:
    """Whether the config's batching can put prefills and decodes in one iteration (all but vLLM-style)."""
    if "continuous-batching" not in cfg.plugins.enabled:
        return True  # another batching plugin: assume it may
    settings = cfg.plugins.settings.get("continuous-batching") or {}
    return settings.get("policy", "vllm") != "vllm"


#: The padded prefill's cap the benchmark runs both sides with (``--max-padding``): chosen on the calibration
#: window's traffic (docs/history/calibration.md, eleventh session), never on the evaluated slices.
DEFAULT_MAX_PADDING = 1.25


def with_max_padding(cfg: RunConfig, max_padding: float | None) -> RunConfig:
    """``cfg`` with continuous batching's ``max_padding`` set (vLLM-style policy only; a value the config sets
    itself is kept). The live engine pads a prefill batch to its longest prompt: without a cap a backlog is
    prefilled as one batch of up to ``max_batch_tokens`` padded tokens, most of them padding. Both sides run
    the same plugin, so the cap changes the system under test, identically live and simulated."""
    if max_padding is None or "continuous-batching" not in cfg.plugins.enabled:
        return cfg
    settings = dict(cfg.plugins.settings.get("continuous-batching") or {})
    if settings.get("policy", "vllm") != "vllm" or "max_padding" in settings:
        return cfg
    data = cfg.model_dump()
    data["plugins"]["settings"] = {**data["plugins"]["settings"],
                                   "continuous-batching": {**settings, "max_padding": float(max_padding)}}
    return RunConfig(**data)


def profile_worker(settings: Any, grid: Any, threads: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch

    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.profiling import profile_backend, profile_meta

    torch.set_num_threads(threads)
    backend = CausalLMBackend.from_settings(settings)
    rows = profile_backend(backend, grid)
    return rows, {**profile_meta(backend), "interleaved": grid.interleave, "spread": grid.spread}



def generic_grid(max_prompt: int, max_output: int, max_batch: int, repeats: int, *, mixed: bool = True):
    """Batch shapes from the model's limits alone (`ProfileGrid.from_limits`, what ``controlplane profile
    --grid limits`` times), never from the evaluated trace."""
    from controlplane.live.profiling import ProfileGrid

    return ProfileGrid.from_limits(max_prompt, max_output, max_batch, repeats, mixed=mixed)


def load_backend(settings: Any, threads: int) -> Any:
    """The benchmark's own copy of the worker's engine, set up as a live worker sets its own up."""
    import torch

    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.worker_runtime import steady_allocator

    torch.set_num_threads(threads)
    steady_allocator()
    return CausalLMBackend.from_settings(settings)


def profile_with(backend: Any, grid: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from controlplane.live.profiling import profile_backend, profile_meta

    rows = profile_backend(backend, grid)
    return rows, {**profile_meta(backend), "interleaved": grid.interleave, "spread": grid.spread}


class Probe:
    """The machine's pace now: a few grid shapes timed on the benchmark's own copy of the worker model,
    their time over the grid profile's for the same shapes (1.0: the speed the grid was profiled at).

    Taken right before a live run starts, it is a measurement earlier than the run, as an operator
    could take one; it never looks at the run it corrects.
    """

    def __init__(self, backend: Any, grid_rows: list[dict[str, Any]], grid_meta: dict[str, Any], *,
                 max_prompt: int, max_output: int, repeats: int = 8) -> None:
        from controlplane.live.profiling import ProfileGrid
        from sim.calibration import grid_model

        self.backend, self.model = backend, grid_model(grid_rows, grid_meta)
        ctx = max(8, (max_prompt + max_output) // 2)
        self.grid = ProfileGrid(prefill_tokens=(0, min(64, max_prompt)), prefill_seqs=(1,), decode_batch_sizes=(0, 1, 8),
                                context_lens=(ctx,), repeats=repeats, warmup=1, mixed=False, interleave=True,
                                spread=True)

    def __call__(self) -> float:
        """The median over the probe's iterations of their time over the grid profile's for their shape
        (a median: one iteration the scheduler delayed does not move it)."""
        from controlplane.live.profiling import profile_backend
        from sim.calibration import predict_row

        rows = profile_backend(self.backend, self.grid)
        ratios = [r["iteration_s"] / p for r in rows if (p := predict_row(self.model, r)) > 0]
        return float(np.median(ratios)) if ratios else 1.0
