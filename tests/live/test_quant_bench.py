"""The quantization benchmark's rows and table (shape, not speed)."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from controlplane.live.model_source import WorkerModelSettings
from controlplane.live.quant_bench import BenchVariant, render_table, run_quant_bench


def test_rows_for_every_variant_and_batch_size():
    base = WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=64)
    rows = run_quant_bench(base, ["fp32", "int8", "nf4"], batch_sizes=[1, 3], prompt_tokens=6, new_tokens=3, repeats=1)
    by_variant = {}
    for r in rows:
        by_variant.setdefault(r.variant, []).append(r)
    assert [r.batch_size for r in by_variant["fp32"]] == [1, 3]
    assert [r.batch_size for r in by_variant["int8"]] == [1, 3]
    for r in by_variant["fp32"] + by_variant["int8"]:
        assert r.ok and r.device == "cpu" and r.repeats == 1
        assert r.tokens_per_s > 0 and r.requests_per_s > 0
        assert r.latency_mean_s > 0 and r.latency_p50_s > 0
        assert r.peak_memory_mb >= 0 and r.model_mb > 0
        assert r.tokens_per_s == r.batch_size * 3 / r.latency_mean_s
    assert by_variant["int8"][0].model_mb < by_variant["fp32"][0].model_mb
    nf4 = by_variant["nf4"]
    assert nf4[0].ok or (len(nf4) == 1 and nf4[0].status.startswith("skipped: "))
    text = io.StringIO()
    Console(file=text, width=200).print(render_table(rows))
    assert "fp32" in text.getvalue() and "int8" in text.getvalue()


def test_unsupported_variant_is_a_skipped_row_not_a_crash():
    if torch.cuda.is_available():
        base = WorkerModelSettings(preset="tiny-llama", device="cuda")
        reason = "CPU kernels only"  # int8 dynamic quantization on a GPU
    else:
        base = WorkerModelSettings(preset="tiny-llama", device="cuda")
        reason = "CUDA is not available"
    rows = run_quant_bench(base, ["int8"], batch_sizes=[1], prompt_tokens=4, new_tokens=2, repeats=1,
                           fresh_process=False)  # (in this process: the same rows)
    assert len(rows) == 1 and rows[0].status.startswith("skipped: ") and reason in rows[0].status
    assert rows[0].as_dict()["tokens_per_s"] is None
    Console(file=io.StringIO()).print(render_table(rows))


def test_variant_specs():
    assert BenchVariant.parse("int8+compile") == BenchVariant("int8", True)
    assert BenchVariant.parse("bf16").label == "bf16"


def test_a_variants_peak_memory_is_its_own_whatever_ran_before_it():
    """In one process the first variant's peak held the process's one-time costs (fp32,fp32: 25.3 then 12.7 MB;
    nf4 105.2 MB first, 35.7 MB after another) and a later one reused what an earlier one freed: each variant now
    runs in a fresh process, warmed up (its precision's libraries, torch's first calls) before it is measured."""
    base = WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=64)
    rows = run_quant_bench(base, ["fp32", "int8", "fp32"], batch_sizes=[1], prompt_tokens=8, new_tokens=4, repeats=1)
    first, _, again = (r.peak_memory_mb for r in rows)
    assert all(r.ok for r in rows) and abs(first - again) < max(2.0, 0.15 * again), (first, again)
