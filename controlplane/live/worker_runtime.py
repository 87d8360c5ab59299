"""The worker side of every pool: one model backend and the bookkeeping a driver needs around it.

It registers requests with the `CausalLMBackend` lazily (a recomputed one with the output it
already streamed), drops preempted ones, runs one ``backend.step`` per `StepCommand` and returns
a plain `StepReply` whose profile row carries the iteration's shape, its own time and the padded
counts the backend really computed. A step whose forward pass raises is run again one request at
a time, so a request that breaks the model fails alone and its worker and batch go on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controlplane.live.device_facts import device_facts
from controlplane.live.worker_messages import (
    StepCommand,
    StepOutOfMemory,
    StepReply,
    TokenOut,
)

if TYPE_CHECKING:  # torch is imported lazily: a worker process sets CUDA_VISIBLE_DEVICES first
    from controlplane.live.model_source import WorkerModelSettings

__all__ = ["WorkerRuntime", "is_out_of_memory"]

log = logging.getLogger("controlplane.worker")


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
        refused: list[TokenOut] = []
        for a in cmd.adds:
            if b.has_request(a.request_id):
                b.remove(a.request_id)
            try:
                b.add_request(a.request_id, a.prompt_ids, max_new_tokens=a.max_new_tokens, stop=a.stop,
                              sampling=a.sampling, generated=a.generated)
            except (ValueError, TypeError) as exc:  # this request only: the others still run
                refused.append(TokenOut(a.request_id, -1, "", True, "error", error=f"refused by the worker: {exc}"))
        skip = {o.request_id for o in refused}
        prefill = tuple(r for r in cmd.prefill_ids if r not in skip)
        try:
            res = b.step(prefill, cmd.decode_ids)
        except BaseException as exc:
            if is_out_of_memory(exc):
                self._free_cache()
                raise StepOutOfMemory(_first_line(exc)) from None
            alone = self._one_at_a_time(prefill, cmd.decode_ids) if isinstance(exc, Exception) else None
            if alone is None:
                raise
            # The iteration was reshaped, so it is no sample of the batch's speed: no profile row.
            return StepReply(cmd.batch_id, tuple(refused) + alone[0], alone[1], {})
        outputs = tuple(refused) + tuple(
            TokenOut(o.request_id, o.token_id, o.text_delta, o.finished, o.finish_reason, o.error)
            for o in res.outputs
        )
        return StepReply(cmd.batch_id, outputs, res.duration_s, res.profile_row(padded=True))

    def _one_at_a_time(self, prefill: tuple[str, ...], decode: tuple[str, ...]) -> tuple[tuple[TokenOut, ...], float] | None:
        """After a step raised: run its requests one at a time (the backend's step changes nothing
        when it raises), fail the ones that raise alone, and keep the worker and the others going.
        None when there is nothing to tell apart (one request) or every request fails alone: then
        the fault is the worker's, not a request's, and the step's exception stands."""
        b = self.backend
        work = [((rid,), ()) for rid in prefill] + [((), (rid,)) for rid in decode]
        if len(work) < 2:
            return None
        outputs: list[TokenOut] = []
        failed: list[tuple[str, BaseException]] = []
        duration = 0.0
        for pre, dec in work:
            try:
                res = b.step(pre, dec)
            except Exception as exc:  # noqa: BLE001 - this request's fault, told apart below
                if is_out_of_memory(exc):
                    self._free_cache()
                    raise StepOutOfMemory(_first_line(exc)) from None
                failed.append(((pre or dec)[0], exc))
                continue
            duration += res.duration_s
            outputs += [TokenOut(o.request_id, o.token_id, o.text_delta, o.finished, o.finish_reason, o.error)
                        for o in res.outputs]
        if len(failed) == len(work):
            return None
        for rid, exc in failed:
            b.remove(rid)
            log.warning("request %s failed its worker's forward pass alone (%s); the batch went on", rid,
                        _first_line(exc))
            outputs.append(TokenOut(rid, -1, "", True, "error",
                                    error=f"the model's forward pass failed on this request: {_first_line(exc)}"))
        return tuple(outputs), duration

    def facts(self) -> dict[str, Any]:
        """Device and model facts for the memory plan (`WorkerReady.memory`)."""
        return device_facts(self.backend, self.settings, self.threads)

    def _free_cache(self) -> None:
        import torch

        if self.backend.device.type == "cuda":
            torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
