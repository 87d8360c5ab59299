"""The worker side of every pool: one model backend and the bookkeeping a driver needs around it.

It registers requests with the `CausalLMBackend` lazily, drops preempted ones, runs one
``backend.step`` per `StepCommand` and returns a plain `StepReply` whose profile row carries the
iteration's shape, its own time and the padded counts the backend really computed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controlplane.live.device_facts import device_facts
from controlplane.live.worker_messages import AddSpec, StepCommand, StepOutOfMemory, StepReply, TokenOut

if TYPE_CHECKING:  # torch is imported lazily: a worker process sets CUDA_VISIBLE_DEVICES first
    from controlplane.live.model_source import WorkerModelSettings

log = logging.getLogger(__name__)

__all__ = ["WorkerRuntime", "is_out_of_memory"]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA OOM and for CPU allocation failures."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - old torch
        pass
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text
    )


class WorkerRuntime:
    """One model backend and the bookkeeping a driver needs around it (lives in the worker)."""

    def __init__(self, backend: Any, settings: WorkerModelSettings, threads: int | None) -> None:
        self.backend = backend
        self.settings = settings
        self.threads = threads

    @classmethod
    def create(cls, settings: WorkerModelSettings, threads: int | None = None) -> WorkerRuntime:
        import torch

        from controlplane.live.backend import CausalLMBackend

        if threads:
            torch.set_num_threads(threads)
        return cls(CausalLMBackend.from_settings(settings), settings, threads)

    def step(self, cmd: StepCommand) -> StepReply:
        b = self.backend
        for rid in cmd.removes:
            b.remove(rid)
        for a in cmd.adds:
            if b.has_request(a.request_id):
                b.remove(a.request_id)
            b.add_request(
                a.request_id, a.prompt_ids + a.generated, max_new_tokens=max(1, a.max_new_tokens - len(a.generated)),
                stop=a.stop, sampling=a.sampling,
            )
            if a.generated:
                self._resume_stream(a)
        try:
            res = b.step(cmd.prefill_ids, cmd.decode_ids)
        except BaseException as exc:
            if is_out_of_memory(exc):
                self._free_cache()
                raise StepOutOfMemory(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            raise
        outputs = tuple(
            TokenOut(o.request_id, o.token_id, o.text_delta, o.finished, o.finish_reason) for o in res.outputs
        )
        return StepReply(cmd.batch_id, outputs, res.duration_s, res.profile_row(padded=True))

    def _resume_stream(self, a: AddSpec) -> None:
        """Give a recomputed request the output stream it had: the original prompt, then ``generated``.

        The backend would otherwise start a fresh stream that takes the already generated tokens
        for prompt, losing text held back at the cut (half a UTF-8 character, the start of a
        stop string) and counting the budget from the cut. ``CausalLMBackend`` has no public
        way to resume a request yet, so this reaches into its request record.
        """
        from controlplane.live.sampling import StopCondition
        from controlplane.live.streaming import OutputStream

        b = self.backend
        record = getattr(b, "_waiting", {}).get(a.request_id)
        if record is None or not hasattr(record, "stream"):
            log.warning("cannot resume the output stream of %s: backend internals changed", a.request_id)
            return
        stop = a.stop or StopCondition()
        eos = b.eos_token_ids if stop.eos_token_ids is None else stop.eos_token_ids
        budget = min(a.max_new_tokens, stop.max_new_tokens or a.max_new_tokens, b.max_seq_len - len(a.prompt_ids))
        stream = OutputStream(b.tokenizer, a.prompt_ids, stop, eos, budget)
        for token in a.generated:
            stream.append(token)
        record.stream = stream

    def facts(self) -> dict[str, Any]:
        """Device and model facts for the memory plan (`WorkerReady.memory`)."""
        return device_facts(self.backend, self.settings, self.threads)

    def _free_cache(self) -> None:
        import torch

        if self.backend.device.type == "cuda":
            torch.cuda.empty_cache()
