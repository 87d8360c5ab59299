"""Benchmark precisions (fp32 / bf16 / int8 / nf4, optionally compiled) on batched generation.

Each variant is measured in a fresh process of its own (spawned): there its model's code is imported and a
small model of its kind is loaded and run first (`_warm_up`: the precision's libraries, torch's first-call
allocations), then it is loaded, warmed up at every batch size (compilation and allocator warm-up stay out
of the timings) and timed over ``repeats`` batched generations through the same continuous-batching engine
the worker serves with. Its peak memory is then its own, whatever ran before it: in one process the first
variant's peak held the process's one-time costs (nf4 105.2 MB first, 35.7 MB after another), and a later
one reused memory an earlier one freed. A variant the device cannot run yields a "skipped: <reason>" row
instead of an exception.

Run: ``python -m controlplane.live.quant_bench --preset medium-llama --variants fp32,int8``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass

import torch

from controlplane.live.backend import CausalLMBackend
from controlplane.live.memory import device_memory, peak_rss_bytes, release_cached_memory, reset_peak
from controlplane.live.model_source import WorkerModelSettings, load_model, resolve_device
from controlplane.live.quantize import PrecisionUnavailable
from controlplane.live.sampling import StopCondition

DEFAULT_VARIANTS = ("fp32", "bf16", "int8", "nf4")
#: The small model a variant's process loads and runs at the variant's precision before the measured one
#: (`_warm_up`): sizes kernels take (multiples of 64), a vocabulary the byte tokenizer takes.
WARM_UP_CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 320}


@dataclass(frozen=True)
class BenchVariant:
    precision: str
    compile: bool = False

    @property
    def label(self) -> str:
        return self.precision + ("+compile" if self.compile else "")

    @classmethod
    def parse(cls, spec: str | BenchVariant) -> BenchVariant:
        """``"int8"`` or ``"int8+compile"``."""
        if isinstance(spec, BenchVariant):
            return spec
        precision, _, extra = spec.partition("+")
        if extra not in ("", "compile"):
            raise ValueError(f"bad variant {spec!r}: use PRECISION or PRECISION+compile")
        return cls(precision=precision, compile=extra == "compile")


@dataclass
class BenchRow:
    """One variant at one batch size (or one skipped/failed variant, with ``batch_size`` 0)."""

    variant: str
    precision: str
    compiled: bool
    device: str
    status: str  # "ok", "skipped: <reason>" or "error: <reason>"
    batch_size: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    repeats: int = 0
    tokens_per_s: float | None = None  # generated tokens / wall time of the batch
    requests_per_s: float | None = None
    latency_mean_s: float | None = None  # wall time of one whole batch
    latency_p50_s: float | None = None
    peak_memory_mb: float | None = None  # CUDA peak allocated, or peak RSS growth on the CPU
    model_mb: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict:
        return asdict(self)


def run_quant_bench(
    settings_base: WorkerModelSettings,
    variants: Iterable[str | BenchVariant] = DEFAULT_VARIANTS,
    batch_sizes: Sequence[int] = (1, 8, 32),
    prompt_tokens: int = 32,
    new_tokens: int = 32,
    repeats: int = 3,
    *,
    fresh_process: bool = True,
) -> list[BenchRow]:
    """Rows for every variant x batch size; never raises for a variant the device cannot run. Each variant runs in a
    fresh process of its own (``fresh_process``; off: in this one, where a variant's peak memory depends on what ran
    before it), with this process's torch threads, after a warm-up (`measure_variant`)."""
    if repeats < 1 or prompt_tokens < 1 or new_tokens < 1 or not batch_sizes:
        raise ValueError("repeats, prompt_tokens, new_tokens must be >= 1 and batch_sizes non-empty")
    rows: list[BenchRow] = []
    for spec in variants:
        args = (settings_base, BenchVariant.parse(spec), tuple(batch_sizes), prompt_tokens, new_tokens, repeats,
                torch.get_num_threads())
        rows += _in_fresh_process(*args) if fresh_process else measure_variant(*args)
    return rows


def measure_variant(base: WorkerModelSettings, variant: BenchVariant, batch_sizes: Sequence[int], prompt_tokens: int,
                    new_tokens: int, repeats: int, threads: int | None = None) -> list[BenchRow]:
    """One variant's rows, measured after its process is warmed up: the model's code imported, a small model of
    the variant's kind loaded and run (`_warm_up`), so its peak memory holds what the variant itself takes."""
    if threads:
        torch.set_num_threads(threads)
    _import_model_code(base)
    _warm_up(base, variant)
    return _bench_variant(base, variant, batch_sizes, prompt_tokens, new_tokens, repeats)


def _in_fresh_process(base: WorkerModelSettings, variant: BenchVariant, *args) -> list[BenchRow]:
    """`measure_variant` in a spawned process of its own; a process that died (killed for memory) is an error row."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(measure_variant, base, variant, *args).result()
        except BrokenProcessPool as exc:
            return [BenchRow(variant.label, variant.precision, variant.compile, base.device,
                             f"error: its process died (killed for memory?): {exc}")]


def _warm_up(base: WorkerModelSettings, variant: BenchVariant) -> None:
    """Load and run a small model (`WARM_UP_CONFIG`) at the variant's precision on its device, and compile a small
    function in its compile mode for a compiled variant: the precision's libraries (bitsandbytes for nf4) and
    torch's one-time allocations then stay out of the variant's peak memory."""
    small = WorkerModelSettings(config=WARM_UP_CONFIG, device=base.device, max_seq_len=16, seed=base.seed)
    _bench_variant(small, BenchVariant(variant.precision), (1,), 4, 2, 1)  # (a variant it cannot run: a row, dropped)
    if variant.compile:
        try:
            ones = torch.ones(8, device=resolve_device(base.device))
            torch.compile(lambda x: torch.relu(x) * 2, mode=base.compile_mode, dynamic=True)(ones)
        except Exception:  # only a warm-up: the variant's own compilation reports real problems
            pass


def _bench_variant(base, variant, batch_sizes, prompt_tokens, new_tokens, repeats) -> list[BenchRow]:
    settings = base.model_copy(update={"precision": variant.precision, "compile": variant.compile})
    device = base.device
    try:
        mem_dev = resolve_device(device)
        release_cached_memory(mem_dev)
        before = device_memory(mem_dev).allocated_bytes  # taken before loading, so peaks include the weights
        loaded = load_model(settings)
    except PrecisionUnavailable as exc:
        return [BenchRow(variant.label, variant.precision, variant.compile, device, f"skipped: {exc}")]
    except Exception as exc:  # a broken optional backend must not take down the whole bench
        return [BenchRow(variant.label, variant.precision, variant.compile, device, f"error: {exc.__class__.__name__}: {exc}")]
    engine = CausalLMBackend(loaded, max_seq_len=prompt_tokens + new_tokens + 1)
    vocab = engine.vocab_size
    rows = []
    try:
        for batch in batch_sizes:
            prompts = _prompts(batch, prompt_tokens, vocab, seed=base.seed)
            release_cached_memory(mem_dev)  # drop load-time garbage (e.g. the fp32 copy int8 started from)
            reset_peak(mem_dev)  # peak of this batch size only, not of loading or earlier sizes
            _generate_batch(engine, prompts, min(new_tokens, 4))  # warm-up (and compilation)
            durations = [_generate_batch(engine, prompts, new_tokens) for _ in range(repeats)]
            peak = _peak_bytes(mem_dev) - before
            mean = statistics.fmean(durations)
            rows.append(
                BenchRow(
                    variant=variant.label,
                    precision=loaded.precision,
                    compiled=loaded.compiled,
                    device=str(mem_dev),
                    status="ok",
                    batch_size=batch,
                    prompt_tokens=prompt_tokens,
                    new_tokens=new_tokens,
                    repeats=repeats,
                    tokens_per_s=batch * new_tokens / mean,
                    requests_per_s=batch / mean,
                    latency_mean_s=mean,
                    latency_p50_s=statistics.median(durations),
                    peak_memory_mb=max(peak, 0) / 2**20,
                    model_mb=loaded.model_bytes / 2**20,
                )
            )
    except Exception as exc:
        rows.append(BenchRow(variant.label, variant.precision, variant.compile, str(mem_dev), f"error: {exc.__class__.__name__}: {exc}"))
    finally:
        del engine, loaded
        gc.collect()
        release_cached_memory(mem_dev)
    return rows


def _import_model_code(settings: WorkerModelSettings) -> None:
    """Import the model's code by building it on the meta device (allocates no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from controlplane.live.model_source import build_config

    try:
        if settings.path is not None:
            config = AutoConfig.from_pretrained(settings.path, local_files_only=True)
        else:
            config = build_config(settings)
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
    except Exception:  # only a warm-up; loading reports real problems per variant
        pass


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return device_memory(device).peak_allocated_bytes
    return peak_rss_bytes()


def _prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    low = min(4, vocab - 1)  # skip the usual special ids
    return [[rng.randrange(low, vocab) for _ in range(length)] for _ in range(batch)]


def _generate_batch(engine: CausalLMBackend, prompts: list[list[int]], new_tokens: int) -> float:
    """Wall time to prefill ``prompts`` together and decode ``new_tokens`` each (EOS ignored)."""
    ids = [f"bench-{i}" for i in range(len(prompts))]
    stop = StopCondition(eos_token_ids=())
    for rid, prompt in zip(ids, prompts):
        engine.add_request(rid, prompt, max_new_tokens=new_tokens, stop=stop)
    start = time.perf_counter()
    engine.step(ids, [])
    while engine.num_running:
        engine.step([], engine.running_ids())
    return time.perf_counter() - start


def render_table(rows: Sequence[BenchRow], title: str = "quantization / compilation benchmark"):
    """A rich ``Table`` of the rows (print it with ``rich.print`` or a ``Console``)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("variant", "device", "batch", "tok/s", "req/s", "batch latency mean", "p50", "peak MB", "model MB", "status"):
        table.add_column(col, justify="left" if col in ("variant", "device", "status") else "right")
    for r in rows:
        if not r.ok:
            table.add_row(r.variant, r.device, "", "", "", "", "", "", "", r.status)
            continue
        table.add_row(
            r.variant,
            r.device,
            str(r.batch_size),
            f"{r.tokens_per_s:.1f}",
            f"{r.requests_per_s:.2f}",
            f"{r.latency_mean_s * 1000:.0f} ms",
            f"{r.latency_p50_s * 1000:.0f} ms",
            f"{r.peak_memory_mb:.1f}",
            f"{r.model_mb:.1f}",
            r.status,
        )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny-llama")
    parser.add_argument("--path", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (process-wide)")
    parser.add_argument("--json", default=None, help="also write the rows here as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = {"path": args.path} if args.path else {"preset": args.preset}
    base = WorkerModelSettings(**source, device=args.device, max_seq_len=args.prompt_tokens + args.new_tokens + 1)
    rows = run_quant_bench(
        base,
        [v for v in args.variants.split(",") if v],
        [int(b) for b in args.batch_sizes.split(",")],
        args.prompt_tokens,
        args.new_tokens,
        args.repeats,
    )
    from rich.console import Console

    Console().print(render_table(rows, title=f"{base.source_name()} (threads={torch.get_num_threads()})"))
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump([r.as_dict() for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()
