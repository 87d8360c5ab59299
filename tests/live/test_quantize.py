"""Loading a quantized model says nothing about optional kernels it does without (controlplane.live.quantize)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from controlplane.live.quantize import OPTIONAL_KERNEL_NOISE, nf4_unavailable_reason, silence_optional_kernel_noise

LOAD_NF4 = """
from controlplane.live.model_source import WorkerModelSettings, load_model
from controlplane.live.backend import CausalLMBackend
loaded = load_model(WorkerModelSettings(preset="tiny-llama", precision="nf4", device="cpu", max_seq_len=32))
print("generated", len(CausalLMBackend(loaded, max_seq_len=32).generate_one([5, 6, 7], 2).token_ids))
"""


def test_an_nf4_load_prints_nothing_about_the_optional_bitsandbytes_kernel():
    """A CPU with AVX-512 bf16 made bitsandbytes ask the Hub for a faster kernel at import: offline, two
    warnings ("Skipping publisher trust check ...", "Failed to load CPU gemm_4bit_forward ... pip install
    kernels") on every nf4 load, though nf4 works on its own kernels. In a fresh process: bitsandbytes logs
    them once, when first imported."""
    if reason := nf4_unavailable_reason("cpu"):
        pytest.skip(reason)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD_NF4], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "generated 2" in done.stdout
    assert "kernels-community" not in done.stderr and "publisher trust" not in done.stderr, done.stderr


def test_only_the_optional_kernel_lines_are_dropped(caplog):
    silence_optional_kernel_noise()
    silence_optional_kernel_noise()  # (once: not a filter per call)
    (name, start), _ = OPTIONAL_KERNEL_NOISE
    logger = logging.getLogger(name)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning(start + "/quantization-bitsandbytes' because Hugging Face Hub is in offline mode.")
        logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]
