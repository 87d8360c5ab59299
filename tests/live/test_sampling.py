"""Seeded sampling: output token i's draw depends on (seed, i) and the logits only, so a request
computed again (a preemption, another worker after a failure) gives the tokens it gave alone."""

from __future__ import annotations

import asyncio

import pytest
import torch

from controlplane.live.sampling import RequestDraws, SamplingParams, StopCondition, draw_seed, sample_rows
from controlplane.live.worker_messages import AddSpec, StepCommand
from controlplane.live.worker_runtime import WorkerRuntime

NO_EOS = StopCondition(eos_token_ids=())
HOT = SamplingParams(temperature=0.9, seed=1234)


def test_a_draw_depends_on_the_seed_and_the_token_index_only():
    logits = torch.zeros(1, 50)  # uniform: every draw is the generator's alone
    once = RequestDraws(7, "cpu")
    tokens = [sample_rows(logits, [HOT], [once])[0][0] for _ in range(12)]
    later = RequestDraws(7, "cpu", first_token_index=5)  # registered again after 5 tokens
    assert [sample_rows(logits, [HOT], [later])[0][0] for _ in range(7)] == tokens[5:]
    assert len(set(tokens)) > 1
    assert draw_seed(7, 3) == draw_seed(7, 3) != draw_seed(7, 4) != draw_seed(8, 4)
    assert 0 <= draw_seed(-(2**63), 0) < 2**63  # the API's seeds may be negative


def test_first_token_index_is_checked():
    with pytest.raises(ValueError, match="first_token_index"):
        SamplingParams(temperature=1.0, seed=1, first_token_index=-1)


def _runtime(engine) -> WorkerRuntime:
    return WorkerRuntime(engine, settings=None, threads=None)


def test_a_request_preempted_on_its_worker_draws_what_it_drew_alone(engine):
    prompt = [5, 6, 7, 8, 9]
    alone = engine.generate_one(prompt, 20, stop=NO_EOS, sampling=HOT).token_ids
    assert alone != engine.generate_one(prompt, 20, stop=NO_EOS).token_ids  # it really samples
    rt = _runtime(engine)
    got: list[int] = []

    def step(n: int, cmd: StepCommand) -> None:
        got.extend(o.token_id for o in rt.step(cmd).outputs)

    add = AddSpec("r", tuple(prompt), 20, NO_EOS, HOT)
    step(0, StepCommand(0, ("r",), (), (add,), ()))
    for n in range(1, 6):
        step(n, StepCommand(n, (), ("r",), (), ()))
    # preempted (its KV dropped), then prefilled again with the output it had: twice
    for n in (6, 12):
        again = AddSpec("r", tuple(prompt), 20, NO_EOS, HOT, tuple(got))
        step(n, StepCommand(n, ("r",), (), (again,), ("r",)))
        for k in range(n + 1, min(n + 6, 20)):
            step(k, StepCommand(k, (), ("r",), (), ()))
    while len(got) < 20:
        step(len(got), StepCommand(len(got), (), ("r",), (), ()))
    assert got == alone


def test_seeded_requests_keep_their_text_through_live_preemptions(tmp_path, tiny_loaded):
    """The tester's case: seeded hot requests at once on a worker short of KV blocks."""
    from controlplane.live.backend import CausalLMBackend
    from controlplane.live.driver import LiveDriver
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.testing import make_config

    prompts = [f"seeded request number {i} asks" for i in range(5)]
    backend = CausalLMBackend(tiny_loaded)
    alone = [backend.generate_one(backend.tokenizer(p)["input_ids"], 24, stop=NO_EOS,
                                  sampling=SamplingParams(temperature=0.9, seed=90 + i)).text
             for i, p in enumerate(prompts)]
    cfg = make_config(storage={"url": f"sqlite:///{tmp_path / 'live.db'}"}, sim={"tick_s": 0.2}, cluster={
        "models": [{"name": "tiny", "replicas": 1, "kv_block_size": 4, "num_kv_blocks": 40,
                    "worker": {"preset": "tiny-llama", "precision": "fp32", "device": "cpu", "max_seq_len": 256}}]})

    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            return await asyncio.gather(*(
                driver.generate(p, max_tokens=24, ignore_eos=True, temperature=0.9, seed=90 + i)
                for i, p in enumerate(prompts)))
        finally:
            await driver.close()

    results = asyncio.run(main())
    assert sum(r.num_preemptions for r in results) > 0
    assert [r.text for r in results] == alone
