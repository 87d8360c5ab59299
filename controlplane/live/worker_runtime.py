"""The worker side of every pool: one model backend and the bookkeeping a driver needs around it.

It registers requests with the `CausalLMBackend` lazily (a recomputed one with the output it
already streamed, its sampling going on at the next output token's draw), drops preempted ones, runs one ``backend.step`` per `StepCommand` and returns
a plain `StepReply` whose profile row carries the iteration's shape, its own time and the padded
counts the backend really computed. A step whose forward pass raises is run again one request at
a time, so a request that breaks the model fails alone and its worker and batch go on.

The same runtime hosts guardian models (`controlplane.live.guardian_models`): a guardian worker
of its own (``placement: own``) is a runtime created from `GuardianWorkerSettings`, with no
generation backend; a generation worker loads guardians beside its model on a `LoadGuardian`
command (``placement: shared``). `WorkerRuntime.command` answers every command a pool sends
(`StepCommand`, `LoadGuardian`, `GuardianCheck`); a guardian check that raises answers verdict
``error`` and the worker goes on. Commands run one at a time, in the order they arrive: on a
shared worker a check runs between two iterations.

A worker whose model is ``torch.compile``d runs a short warm-up (`warm_up`: a prefill and decodes
alone, then two requests batched) before it reports ready, so the compilation happens there, not in
its first requests: its readiness means ready.

Before its model loads, a worker steadies the process's memory allocator (`steady_allocator`):
glibc's default hands freed blocks of 128 KiB and more (logits, MLP activations) back to the kernel
and maps them again at the next iteration, so each step paid ~120-210 minor page faults, a number
that moved with the heap's state; with fixed thresholds it pays none (docs/history/calibration.md, tenth
session: the steadiness measurements).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from controlplane.live.device_facts import device_facts
from controlplane.live.guardian_models import GuardianWorkerSettings
from controlplane.live.worker_messages import (
    GuardianCheck,
    GuardianLoaded,
    GuardianVerdict,
    LoadGuardian,
    StepCommand,
    StepOutOfMemory,
    StepReply,
    TokenOut,
    describe_error,
)

if TYPE_CHECKING:  # torch is imported lazily: a worker process sets CUDA_VISIBLE_DEVICES first
    from controlplane.live.model_source import WorkerModelSettings

__all__ = ["WorkerRuntime", "is_out_of_memory", "settings_from_payload", "settings_payload", "steady_allocator"]

log = logging.getLogger("controlplane.worker")

#: glibc ``mallopt`` parameters (malloc.h) and the values a worker sets: blocks below 32 MiB come from
#: the heap rather than fresh mappings, and up to 256 MiB of free heap top is kept, not trimmed.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024
STEADY_TRIM_THRESHOLD = 256 * 1024 * 1024
#: ``CONTROLPLANE_WORKER_MALLOC=default`` leaves glibc's allocator as it is.
MALLOC_ENV = "CONTROLPLANE_WORKER_MALLOC"


def steady_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds in this process (True when set).

    glibc's default threshold is dynamic: freed blocks above it are unmapped (or the heap top
    trimmed) and the next iteration's tensors fault their pages in again. A worker's iterations
    allocate the same sizes over and over, so it keeps them instead. A no-op off glibc, or when
    ``CONTROLPLANE_WORKER_MALLOC=default``.
    """
    if os.environ.get(MALLOC_ENV, "").lower() == "default":
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD))


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


def settings_payload(settings: WorkerModelSettings | GuardianWorkerSettings) -> tuple[str, dict[str, Any]]:
    """What a pool sends to a worker process or actor to start it: (kind, plain values)."""
    kind = "guardian" if isinstance(settings, GuardianWorkerSettings) else "model"
    return kind, settings.model_dump()


def settings_from_payload(payload: tuple[str, dict[str, Any]]) -> WorkerModelSettings | GuardianWorkerSettings:
    kind, values = payload
    if kind == "guardian":
        return GuardianWorkerSettings(**values)
    from controlplane.live.model_source import WorkerModelSettings

    return WorkerModelSettings(**values)


class WorkerRuntime:
    """One model backend (or none: a guardian worker), the guardian models it hosts, and the
    bookkeeping a driver needs around them (lives in the worker)."""

    def __init__(self, backend: Any, settings: WorkerModelSettings | GuardianWorkerSettings,
                 threads: int | None) -> None:
        self.backend = backend
        self.settings = settings
        self.threads = threads
        self.guardians: dict[str, Any] = {}  # name -> GuardianModel
        self.warm_up: dict[str, Any] | None = None  # what `warm_up` ran (a compiled model's worker)

    @classmethod
    def create(cls, settings: WorkerModelSettings | GuardianWorkerSettings,
               threads: int | None = None) -> WorkerRuntime:
        if isinstance(settings, GuardianWorkerSettings):
            if threads and settings.guardian.kind != "rules":  # rules need no torch
                import torch

                torch.set_num_threads(threads)
            runtime = cls(None, settings, threads)
            loaded = runtime.load_guardian(settings.spec())
            if loaded.error:
                raise ValueError(loaded.error)
            return runtime
        import torch

        from controlplane.live.backend import CausalLMBackend

        if threads:
            torch.set_num_threads(threads)
        steady_allocator()
        runtime = cls(CausalLMBackend.from_settings(settings), settings, threads)
        if runtime.backend.loaded.compiled:  # compiled now, before the worker says it is ready
            runtime.warm_up = warm_up(runtime.backend)
        return runtime

    def command(self, cmd: Any) -> Any:
        """Answer one command of `WorkerPool.command`."""
        if isinstance(cmd, GuardianCheck):
            return self.check(cmd)
        if isinstance(cmd, LoadGuardian):
            spec = cmd.spec
            if self.backend is not None:  # a guardian sharing a generation worker runs on its device
                spec = spec.model_copy(update={"device": str(self.backend.device)})
            return self.load_guardian(spec)
        if isinstance(cmd, StepCommand):
            return self.step(cmd)
        raise TypeError(f"unknown worker command {type(cmd).__name__}")

    def load_guardian(self, spec: Any) -> GuardianLoaded:
        """Load a guardian model into this worker; a model that does not load is an answer with
        the error (naming the guardian's key), and the worker goes on without it."""
        from controlplane.live.guardian_models import load_guardian

        try:
            self.guardians[spec.name] = load_guardian(spec)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which records it
            return GuardianLoaded(spec.name, spec.device, str(exc) or describe_error(exc))
        return GuardianLoaded(spec.name, spec.device)

    def check(self, cmd: GuardianCheck) -> GuardianVerdict:
        """One guardian check; a guardian that raises answers ``error`` (the worker goes on)."""
        model = self.guardians.get(cmd.guardian)
        if model is None:
            return GuardianVerdict(cmd.guardian, "error", None, f"this worker hosts no guardian {cmd.guardian!r}",
                                   0.0, "none")
        device = model.spec.device if model.spec.kind != "rules" else "cpu"
        t0 = time.perf_counter()
        try:
            verdict, score, reason = model.check(cmd.text)
        except Exception as exc:  # noqa: BLE001 - this check only: the guardian answers "error"
            if is_out_of_memory(exc) and device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
            return GuardianVerdict(cmd.guardian, "error", None, describe_error(exc), time.perf_counter() - t0, device)
        return GuardianVerdict(cmd.guardian, verdict, round(float(score), 6), reason, time.perf_counter() - t0,
                               device)

    def step(self, cmd: StepCommand) -> StepReply:
        b = self.backend
        if b is None:
            raise RuntimeError("a guardian worker runs no generation steps")
        for rid in cmd.removes:
            b.remove(rid)
        refused: list[TokenOut] = []
        for a in cmd.adds:
            if b.has_request(a.request_id):
                b.remove(a.request_id)
            try:
                b.add_request(a.request_id, a.prompt_ids, max_new_tokens=a.max_new_tokens, stop=a.stop,
                              sampling=_resumed(a.sampling, len(a.generated)), generated=a.generated,
                              prefix_scope=a.prefix_scope)
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
        """Device and model facts for the memory plan (`WorkerReady.memory`); a guardian worker's
        guardian, kind, model and device."""
        if self.backend is None:
            spec = self.settings.spec()
            return {"guardian": spec.name, "kind": spec.kind, "model": spec.model, "precision": spec.precision,
                    "device": "cpu" if spec.kind == "rules" else spec.device, "pid": os.getpid()}
        facts = device_facts(self.backend, self.settings, self.threads)
        if self.warm_up is not None:
            facts["warm_up"] = self.warm_up
        return facts

    def _free_cache(self) -> None:
        import torch

        if self.backend.device.type == "cuda":
            torch.cuda.empty_cache()


#: The warm-up's requests: prompt lengths (two differ: a padded batch) and tokens each (prefill + decodes).
WARM_UP_PROMPTS = (8, 5)
WARM_UP_TOKENS = 3


def warm_up(backend: Any) -> dict[str, Any]:
    """Run the shapes a worker meets first, so that a ``torch.compile``d model compiles them now
    rather than in its first requests (minutes each on a CPU): one request alone (a prefill, then
    decodes) and then two together (a padded batched prefill, then batched decodes). Compilation
    specializes sizes 1, so batch 1 and batch 2 are compiled apart; larger batches reuse batch 2's
    graphs (``dynamic=True``). The engine is left empty. Returns the steps run and their seconds."""
    from controlplane.live.sampling import StopCondition

    stop = StopCondition(eos_token_ids=())  # every request runs its WARM_UP_TOKENS
    low = min(4, backend.vocab_size - 1)  # (past the usual special ids)
    room = max(2, backend.max_seq_len - WARM_UP_TOKENS - 1)
    batch = 1 if backend.max_batch_size == 1 else len(WARM_UP_PROMPTS)
    groups = [[WARM_UP_PROMPTS[0]], list(WARM_UP_PROMPTS[:batch])] if batch > 1 else [[WARM_UP_PROMPTS[0]]]
    t0, steps = time.perf_counter(), 0
    for g, lengths in enumerate(groups):
        ids = [f"__warm_up_{g}_{i}" for i in range(len(lengths))]
        for i, (rid, n) in enumerate(zip(ids, lengths)):
            n = min(n, room)
            backend.add_request(rid, [low + (7 * i + k) % (backend.vocab_size - low) for k in range(n)],
                                max_new_tokens=WARM_UP_TOKENS, stop=stop)
        backend.step(ids, [])
        steps += 1
        while any(backend.has_request(rid) for rid in ids):
            backend.step([], [rid for rid in backend.running_ids() if rid in ids])
            steps += 1
    if backend.prefix_store is not None:
        backend.prefix_store.clear()  # no warm-up prompt is a prefix worth keeping
    return {"steps": steps, "batch_sizes": [len(g) for g in groups], "seconds": round(time.perf_counter() - t0, 3)}


def _resumed(sampling: Any, generated: int) -> Any:
    """The request's sampling, its draws going on at output token ``generated`` (a request computed
    again after a preemption or a failure draws what it would have drawn the first time)."""
    if sampling is None or not generated:
        return sampling
    import dataclasses

    return dataclasses.replace(sampling, first_token_index=generated)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
