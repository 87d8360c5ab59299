"""docs/latency-models.md's first example runs as written (it once used `np` without importing numpy)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "latency-models.md"


def test_the_latency_models_doc_example_runs_as_written():
    blocks = re.findall(r"^<!-- test -->\n```python\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    assert blocks, "docs/latency-models.md: no block marked <!-- test -->"
    namespace: dict = {"__name__": "docs_latency_models"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - the doc's own code
    model, shape = namespace["model"], namespace["IterationShape"]
    assert model.iteration_s(shape(prefill_chunk_tokens=(1024,), prefill_context_tokens=(0,))) > 0
