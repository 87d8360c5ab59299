"""torch.compile through the engine (opt-in: compiling takes ~1 minute on two CPU cores)."""

from __future__ import annotations

import os

import pytest

from controlplane.live.backend import CausalLMBackend, StopCondition
from controlplane.live.model_source import WorkerModelSettings

pytestmark = pytest.mark.skipif(
    os.environ.get("CONTROLPLANE_LIVE_COMPILE") != "1",
    reason="torch.compile (inductor) needs ~1 min on 2 CPU cores; set CONTROLPLANE_LIVE_COMPILE=1 to run",
)


def test_compiled_engine_matches_eager(tiny_loaded):
    settings = WorkerModelSettings(preset="tiny-llama", device="cpu", compile=True, compile_mode="default", max_seq_len=256)
    compiled = CausalLMBackend.from_settings(settings)
    assert compiled.loaded.compiled
    eager = CausalLMBackend(tiny_loaded, max_seq_len=256)
    stop = StopCondition(eos_token_ids=())
    prompts = [[5, 6, 7], list(range(10, 40)), [99] * 12]
    want = [eager.generate_one(p, 6, stop=stop).token_ids for p in prompts]
    for i, p in enumerate(prompts):
        compiled.add_request(f"c{i}", p, max_new_tokens=6, stop=stop)
    got: dict[str, list[int]] = {}
    while compiled.num_waiting or compiled.num_running:
        for out in compiled.step(compiled.waiting_ids(), compiled.running_ids()).outputs:
            got.setdefault(out.request_id, []).append(out.token_id)
    assert [got[f"c{i}"] for i in range(3)] == want
