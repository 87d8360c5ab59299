"""Measure real iteration times over a grid of batch shapes, for the simulator's profile model.

Each grid point builds the shape for real - ``decode_batch`` running sequences at ``context``
tokens, plus ``prefill_seqs`` new prompts of ``prefill_tokens`` each - and times ``step()`` on it.
Rows are in the ``controlplane-profile/1`` format (`controlplane.hardware.profile_format`) that the
simulator's ``measured`` latency model fits, so a simulated cluster can replay traces at the
speed this worker actually runs.

Run: ``python -m controlplane.live.profiling --preset small-llama --out profiles/small-cpu.json``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from controlplane.hardware.profile_format import write_profile
from controlplane.live.backend import CausalLMBackend
from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.sampling import StopCondition

_NO_EOS = StopCondition(eos_token_ids=())


@dataclass(frozen=True)
class ProfileGrid:
    """The shapes to time. A 0 in ``prefill_tokens`` / ``decode_batch_sizes`` means none of that kind."""

    prefill_tokens: Sequence[int] = (0, 32, 128, 512)
    prefill_seqs: Sequence[int] = (1,)
    decode_batch_sizes: Sequence[int] = (0, 1, 8, 32)
    context_lens: Sequence[int] = (32, 256, 1024)
    repeats: int = 3
    warmup: int = 1
    mixed: bool = True  # also iterations that prefill and decode together (False: a policy that never mixes)
    # Time the grid ``repeats`` times over, one iteration per point per pass, instead of a point's
    # repeats back to back: on a machine whose speed drifts (other jobs), each point's mean then
    # spans the whole profiling time and the points' relative costs are not the drift's.
    interleave: bool = False
    # Batches of mixed lengths, as live batches are: the members of a decode batch (of a prefill) hold
    # contexts (prompts) spread evenly from half the point's length up to it, so the padded engine
    # pays for padding and its attention masks as it does live. Rows then carry the padded counts.
    spread: bool = False

    @classmethod
    def from_limits(cls, max_prompt: int, max_output: int, max_batch: int, repeats: int = 2, *,
                    mixed: bool = True) -> ProfileGrid:
        """A generic grid from the model's limits alone, never from a trace: prompts up to ``max_prompt``
        tokens (16, 64, 256, 1024 below it, and it), contexts at 1/8, 1/2 and all of ``max_prompt +
        max_output``, decode batches in powers of 2 up to ``max_batch``; interleaved passes, spread lengths."""
        if min(max_prompt, max_output, max_batch) < 1:
            raise ValueError(f"limits must be positive: max_prompt={max_prompt}, max_output={max_output}, "
                             f"max_batch={max_batch}")
        tokens = sorted({0, max_prompt} | {t for t in (16, 64, 256, 1024) if t < max_prompt})
        longest = max_prompt + max_output
        contexts = sorted({max(8, longest // 8), max(8, longest // 2), longest})
        batches = sorted({0, max_batch} | {b for b in (1, 2, 4, 8, 16, 32, 64) if b < max_batch})
        return cls(prefill_tokens=tuple(tokens), prefill_seqs=(1, 4), decode_batch_sizes=tuple(batches),
                   context_lens=tuple(contexts), repeats=repeats, warmup=1, mixed=mixed, interleave=True, spread=True)

    @property
    def steps_per_point(self) -> int:
        """The most steps a grid point takes in one pass (warm-up included): what a decode batch grows by."""
        return self.warmup + (1 if self.interleave else self.repeats)

    def decode_group_fits(self, context: int, batch: int, max_seq_len: int) -> bool:
        """Whether the decode batch of ``context`` and the prefills timed on it fit ``max_seq_len`` (they grow by
        one token per step); `profile_backend` skips the ones that do not."""
        group = sum(1 for c, b, _, _ in self.points() if (c, b) == (context, batch))
        return not batch or context + group * self.steps_per_point + 1 <= max_seq_len

    def left_out(self, max_seq_len: int) -> tuple[list[int], list[int], int]:
        """What ``max_seq_len`` leaves out of the grid: the prompt lengths (``prefill_tokens``) and the decode
        contexts (``context_lens``) not timed, and the ``max_seq_len`` that would time every point."""
        points = list(self.points())
        contexts = {c for c, b, _, _ in points if b}
        fitting = {c for c, b, _, _ in points if b and self.decode_group_fits(c, b, max_seq_len)}
        tokens = sorted({t for _, _, t, _ in points if t >= max_seq_len})
        needed = max([t + 1 for _, _, t, _ in points]
                     + [c + sum(1 for p in points if p[:2] == (c, b)) * self.steps_per_point + 1
                        for c, b, _, _ in points if b])
        return tokens, sorted(contexts - fitting), needed

    def points(self) -> Iterator[tuple[int, int, int, int]]:
        """(context, decode_batch, prefill_tokens, prefill_seqs), grouped so each decode batch is built once."""
        for context, batch in itertools.product(sorted(set(self.context_lens)), sorted(set(self.decode_batch_sizes))):
            if batch == 0 and context != min(self.context_lens):
                continue  # without decodes the context axis means nothing
            for tokens, seqs in itertools.product(sorted(set(self.prefill_tokens)), sorted(set(self.prefill_seqs))):
                if tokens == 0 and seqs != min(self.prefill_seqs):
                    continue
                if tokens == 0 and batch == 0:
                    continue
                if tokens and batch and not self.mixed:
                    continue
                yield context, batch, tokens, seqs


def profile_backend(
    backend_or_settings: CausalLMBackend | WorkerModelSettings,
    grid: ProfileGrid | None = None,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, float | int]]:
    """Time ``grid.repeats`` iterations at every grid point that fits ``max_seq_len``; return the rows
    (`ProfileGrid.left_out` names the points that do not fit, for the caller to say so).

    ``progress(points_done, points_total)`` is called after each grid point (for progress bars; with
    ``grid.interleave`` a point counts once per pass). The process's allocator is steadied first, as
    a live worker's is (`steady_allocator`), so the grid is timed the way the worker runs.
    """
    from controlplane.live.worker_runtime import steady_allocator

    steady_allocator()
    grid = grid or ProfileGrid()
    backend = (
        backend_or_settings
        if isinstance(backend_or_settings, CausalLMBackend)
        else CausalLMBackend.from_settings(backend_or_settings)
    )
    if backend.num_running or backend.num_waiting:
        raise RuntimeError("profile an idle backend: its requests would distort the shapes")
    rng = random.Random(seed)
    ids = itertools.count()
    rows: list[dict[str, float | int]] = []
    points = list(grid.points())
    passes = [(grid.warmup, grid.repeats)]  # (untimed, timed) steps per point in each pass over the grid
    if grid.interleave:
        passes = [(grid.warmup if i == 0 else 0, 1) for i in range(grid.repeats)]
    total = len(points) * len(passes)
    done = 0
    for warmup, repeats in passes:
        steps_per_point = warmup + repeats
        for (context, batch), group in itertools.groupby(points, key=lambda p: (p[0], p[1])):
            group = list(group)
            growth = len(group) * steps_per_point  # decode seqs gain one token per measured step
            if not grid.decode_group_fits(context, batch, backend.max_seq_len):  # (`ProfileGrid.left_out` says)
                done += len(group)
                if progress is not None:
                    progress(done, total)
                continue
            running = [f"profile-d{next(ids)}" for _ in range(batch)]
            for rid, length in zip(running, _lengths(context, batch, grid.spread)):
                backend.add_request(rid, _prompt(rng, length, backend.vocab_size), max_new_tokens=growth + 1,
                                    stop=_NO_EOS)
            if running:
                backend.step(running, [])
            try:
                for _, _, tokens, seqs in group:
                    if tokens >= backend.max_seq_len:
                        done += 1
                        continue
                    for step in range(steps_per_point):
                        new = [f"profile-p{next(ids)}" for _ in range(seqs if tokens else 0)]
                        for rid, length in zip(new, _lengths(tokens, len(new), grid.spread)):
                            backend.add_request(rid, _prompt(rng, length, backend.vocab_size), max_new_tokens=2,
                                                stop=_NO_EOS)
                        result = backend.step(new, running)
                        for rid in new:
                            backend.remove(rid)
                        if step >= warmup:
                            # spread lengths: also what the padded engine computed (sim/latency/measured.py)
                            rows.append(result.profile_row(padded=grid.spread))
                    done += 1
                    if progress is not None:
                        progress(done, total)
            finally:
                for rid in running:
                    backend.remove(rid)
    return rows


def _lengths(longest: int, count: int, spread: bool) -> list[int]:
    """``count`` lengths: all ``longest``, or spread evenly from about half of it up to it."""
    if not spread or count < 2:
        return [longest] * count
    low = max(1, longest // 2)
    return [low + (longest - low) * i // (count - 1) for i in range(count)]


def _prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    low = min(4, vocab - 1)
    return [rng.randrange(low, vocab) for _ in range(length)]


def profile_meta(backend: CausalLMBackend) -> dict[str, Any]:
    """What the profile was measured on: the simulator keys its fits by these."""
    device = backend.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "model": backend.loaded.name or "model",
        "device": str(device),
        "device_name": name,
        "precision": backend.loaded.precision,
        "compiled": bool(backend.loaded.compiled),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batching": "padded",  # the backend pads each forward to its longest sequence (see sim/latency/measured.py)
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny-llama")
    parser.add_argument("--path", default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--prefill-tokens", default="0,32,128,512")
    parser.add_argument("--decode-batch-sizes", default="0,1,8,32")
    parser.add_argument("--context-lens", default="32,256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (process-wide)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = {"path": args.path} if args.path else {"preset": args.preset}
    settings = WorkerModelSettings(**source, precision=args.precision, device=args.device, compile=args.compile)
    backend = CausalLMBackend.from_settings(settings)
    grid = ProfileGrid(
        prefill_tokens=_ints(args.prefill_tokens),
        decode_batch_sizes=_ints(args.decode_batch_sizes),
        context_lens=_ints(args.context_lens),
        repeats=args.repeats,
    )
    rows = profile_backend(backend, grid)
    path = write_profile(args.out, rows, profile_meta(backend))
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
