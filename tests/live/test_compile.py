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


def test_a_compiled_worker_compiles_in_its_warm_up_not_in_its_first_requests():
    """The tester's comp2.yaml (one layer, hidden 64): ready at once, then 150 s for the first 4-token
    request and minutes more for the first batch. After the warm-up, a request alone and then a
    batch of three (other lengths) compile nothing new."""
    from torch._dynamo.utils import counters

    from controlplane.live.worker_runtime import WorkerRuntime

    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 512,
              "max_position_embeddings": 512, "initializer_range": 0.1}
    settings = WorkerModelSettings(config=config, device="cpu", compile=True, compile_mode="default",
                                   max_seq_len=256)
    runtime = WorkerRuntime.create(settings, threads=1)
    assert runtime.warm_up["batch_sizes"] == [1, 2]
    compiled = counters["stats"]["unique_graphs"]
    assert compiled > 0
    engine, stop = runtime.backend, StopCondition(eos_token_ids=())
    engine.generate_one([9, 10, 11, 12, 13, 14], 4, stop=stop)
    for i, p in enumerate([[5, 6, 7], list(range(10, 40)), [99] * 12]):
        engine.add_request(f"c{i}", p, max_new_tokens=6, stop=stop)
    while engine.num_waiting or engine.num_running:
        engine.step(engine.waiting_ids(), engine.running_ids())
    assert counters["stats"]["unique_graphs"] == compiled


def test_a_closed_compiled_worker_leaves_no_leaked_semaphore():
    """torch.compile draws a tqdm bar in the worker process: a `compile: true` daemon ended with
    "resource_tracker: There appear to be 1 leaked semaphore objects" after a clean SIGTERM."""
    from tests.live.test_pool_process import start_and_close_pool

    stderr = start_and_close_pool({"preset": "tiny-llama", "device": "cpu", "max_seq_len": 64, "compile": True},
                                  timeout_s=900)
    assert "leaked semaphore" not in stderr, stderr
