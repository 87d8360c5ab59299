"""Shared paths and helpers for the trace tests.

Real traces under /work/shared are used when present (skipped otherwise); everything else is
a tiny fixture written to tmp_path, plus the Azure trace bundled in the package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path("/work/shared")
MOONCAKE = SHARED / "data/traces/mooncake_fast25/conversation_trace.jsonl"
VIDUR_ARXIV = SHARED / "data/traces/vidur_arxiv_summarization/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
AZURE_SHARED = SHARED / "data/traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv"
ANCHORS = sorted((SHARED / "anchors/vidur").glob("*/workload.csv")) if (SHARED / "anchors/vidur").is_dir() else []


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text) -> Path of a small file in tmp_path (text written verbatim, no newline translation)."""
    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_bytes(text.encode("utf-8"))
        return p
    return _write
