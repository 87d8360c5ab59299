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
    rows = run_quant_bench(base, ["int8"], batch_sizes=[1], prompt_tokens=4, new_tokens=2, repeats=1)
    assert len(rows) == 1 and rows[0].status.startswith("skipped: ") and reason in rows[0].status
    assert rows[0].as_dict()["tokens_per_s"] is None
    Console(file=io.StringIO()).print(render_table(rows))


def test_variant_specs():
    assert BenchVariant.parse("int8+compile") == BenchVariant("int8", True)
    assert BenchVariant.parse("bf16").label == "bf16"
