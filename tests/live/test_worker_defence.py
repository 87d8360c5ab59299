"""Workers defend themselves (issue 18): a request that cannot be computed fails alone, with its
reason, and its worker and the other requests of its batch go on; a request in the steps of two
workers that failed is quarantined rather than retried on a third replica."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch

from controlplane.live.driver import LiveDriver
from controlplane.live.pool_thread import LocalThreadPool
from controlplane.live.sampling import (
    SamplingParams,
    StopCondition,
    sample_next,
    sample_rows,
)
from controlplane.live.worker_messages import AddSpec, StepCommand, WorkerLost
from controlplane.live.worker_runtime import WorkerRuntime
from controlplane.testing import make_config
from controlplane.types import ReasonCode, WorkerState


def poisoned(temperature: float = math.nan) -> SamplingParams:
    """Sampling params that got past every check (as a bug or a new client path might let them)."""
    p = SamplingParams(temperature=1.0, seed=1)
    object.__setattr__(p, "temperature", temperature)
    return p


def test_sampling_params_refuse_non_finite_values():
    for bad in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": math.nan}, {"temperature": -1}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_a_row_that_cannot_be_sampled_fails_alone():
    logits = torch.randn(3, 16)
    logits[1, 4] = math.nan
    params = [SamplingParams(), SamplingParams(), poisoned()]
    tokens, errors = sample_rows(logits, params, [None, None, params[2].make_generator(torch.device("cpu"))])
    assert set(errors) == {1, 2} and "non-finite" in errors[1] and "sampling failed" in errors[2]
    assert tokens[0] == int(torch.argmax(logits[0])) and tokens[1] == tokens[2] == -1
    with pytest.raises(ValueError, match="row 1"):
        sample_next(logits, params, [None] * 3)
    # a tiny temperature is greedy, not an overflow
    assert sample_rows(logits[:1], [SamplingParams(temperature=1e-300)], [torch.Generator()])[0] == [tokens[0]]


def test_the_worker_fails_one_request_and_keeps_the_others(engine):
    runtime = WorkerRuntime(engine, settings=None, threads=None)
    prompt = tuple(engine.tokenizer("hello there")["input_ids"])
    stop = StopCondition(eos_token_ids=())
    adds = (AddSpec("good", prompt, 4, stop, SamplingParams()), AddSpec("bad", prompt, 4, stop, poisoned()),
            AddSpec("refused", (10**9,), 4, stop, SamplingParams()))
    reply = runtime.step(StepCommand(1, ("good", "bad", "refused"), (), adds))
    by_id = {o.request_id: o for o in reply.outputs}
    assert by_id["good"].error is None and not by_id["good"].finished
    assert by_id["bad"].finish_reason == "error" and "sampling failed" in by_id["bad"].error
    assert by_id["refused"].error.startswith("refused by the worker")
    assert engine.running_ids() == ["good"] and not engine.has_request("bad")
    for _ in range(3):  # the survivor decodes to its end on the same worker
        reply = runtime.step(StepCommand(2, (), ("good",)))
    assert reply.outputs[0].finished and reply.outputs[0].finish_reason == "length"


def test_a_request_that_fails_mid_decode_leaves_the_batch_intact(engine):
    prompt = engine.tokenizer("one two three")["input_ids"]
    stop = StopCondition(eos_token_ids=())
    for rid in ("a", "bad", "b"):
        engine.add_request(rid, prompt, max_new_tokens=5, stop=stop)
    texts = {rid: o.text_delta for rid, o in engine.step(["a", "bad", "b"], []).by_id.items()}
    engine._running["bad"].sampling = poisoned()  # noqa: SLF001 - it goes bad after its prefill
    out = engine.step([], ["a", "bad", "b"]).by_id
    assert out["bad"].error and out["bad"].finish_reason == "error"
    assert engine.running_ids() == ["a", "b"]
    while True:
        for rid in ("a", "b"):
            texts[rid] += out[rid].text_delta
        if not engine.num_running:
            break
        out = engine.step([], engine.running_ids()).by_id
    assert out["a"].finish_reason == out["b"].finish_reason == "length"
    alone = engine.generate_one(prompt, 5, stop=stop).text  # greedy: the failure changed nothing for them
    assert texts["a"] == texts["b"] == alone


def config(tmp_path: Path, replicas: int = 1):
    return make_config(storage={"url": f"sqlite:///{tmp_path / 'live.db'}"}, control={"tick_s": 0.2},
                       cluster={"models": [{"name": "tiny", "replicas": replicas,
                                            "worker": {"preset": "tiny-llama", "max_seq_len": 128}}]})


def run(cfg, body):
    async def main():
        driver = LiveDriver(cfg, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            return await body(driver), driver
        finally:
            await driver.close()

    return asyncio.run(main())


def test_the_library_path_refuses_non_finite_sampling_before_the_core(tmp_path):
    from controlplane.live.http_errors import InvalidRequest

    async def body(driver):
        refused = []
        for kwargs in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": math.nan}):
            with pytest.raises(InvalidRequest) as err:
                await driver.submit("x", max_tokens=2, **kwargs)
            refused.append(err.value.param)
        return refused, driver.core.ctx.ids.next("live-request")

    (params, next_id), _ = run(config(tmp_path), body)
    assert params == ["temperature", "temperature", "top_p"]
    assert next_id == 0  # no request id was ever taken: nothing reached the core


def test_a_poisoned_request_fails_alone_and_no_worker_fails(tmp_path, monkeypatch):
    async def body(driver):
        with monkeypatch.context() as m:  # let a NaN temperature through every check
            m.setattr(SamplingParams, "__post_init__", lambda self: None)
            good = await driver.submit("a fine prompt", max_tokens=6, ignore_eos=True)
            bad = await driver.submit("a poisoned prompt", max_tokens=6, temperature=math.nan)
        results = await asyncio.gather(good.result(), bad.result())
        after = await driver.generate("and another one", max_tokens=3, ignore_eos=True)
        return results, after, [w.state for w in driver.core.workers.values()], driver.core.stats

    (ok, failed), after, states, _ = run(config(tmp_path), body)[0]
    assert ok.ok and ok.completion_tokens == 6 and after.ok
    assert failed.status == "failed" and failed.reason_code is ReasonCode.INVALID and failed.http_status == 400
    assert "could not compute this request" in failed.reason and "sampling failed" in failed.reason
    assert states == [WorkerState.READY] and failed.num_retries == 0


def test_a_request_that_failed_two_workers_is_quarantined(tmp_path):
    killer: set[str] = set()
    steps_seen: list[str] = []

    async def body(driver):
        real_step = driver.pool.step

        async def step(wid, cmd):
            if killer & {*cmd.prefill_ids, *cmd.decode_ids}:
                steps_seen.append(wid)
                raise WorkerLost(f"worker {wid} died (test)")
            return await real_step(wid, cmd)

        driver.pool.step = step
        handle = await driver.submit("a request that kills workers", max_tokens=4)
        killer.add(handle.request_id)  # its step has not run yet: nothing awaited since submit
        result = await handle.result()
        after = await asyncio.wait_for(driver.generate("still served", max_tokens=3, ignore_eos=True), 120)
        return result, after

    (result, after), _ = run(config(tmp_path, replicas=3), body)
    assert len(steps_seen) == 2 and len(set(steps_seen)) == 2  # two workers, never a third
    assert result.status == "failed" and result.reason_code is ReasonCode.WORKER_FAILED
    assert result.reason.startswith("quarantined: 2 workers failed")
    assert after.ok


def _poison_forward(engine, monkeypatch, poison: int) -> None:
    """Make the model's forward raise whenever ``poison`` is among its input ids (a request that
    breaks the model, as a kernel bug or a corrupt input could)."""
    real = engine._forward  # noqa: SLF001

    def forward(input_ids, *args, **kwargs):
        if (input_ids == poison).any():
            raise RuntimeError("index out of range in self (poisoned input)")
        return real(input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "_forward", forward)


def test_a_request_that_breaks_the_forward_pass_fails_alone(engine, monkeypatch):
    runtime = WorkerRuntime(engine, settings=None, threads=None)
    stop = StopCondition(eos_token_ids=())
    prompt = tuple(engine.tokenizer("hello there")["input_ids"])
    poison = 7
    assert poison not in prompt
    _poison_forward(engine, monkeypatch, poison)
    adds = (AddSpec("good", prompt, 3, stop, SamplingParams()), AddSpec("bad", (*prompt, poison), 3, stop,
                                                                         SamplingParams()),
            AddSpec("also-good", prompt, 3, stop, SamplingParams()))
    reply = runtime.step(StepCommand(1, ("good", "bad", "also-good"), (), adds))
    by_id = {o.request_id: o for o in reply.outputs}
    assert by_id["bad"].finish_reason == "error" and "forward pass failed" in by_id["bad"].error
    assert by_id["good"].error is None and by_id["also-good"].error is None
    assert sorted(engine.running_ids()) == ["also-good", "good"] and not engine.has_request("bad")
    assert not reply.did_compute  # a reshaped step is no calibration sample
    for _ in range(2):  # the survivors decode to their end together on the same worker
        reply = runtime.step(StepCommand(2, (), ("good", "also-good")))
    assert all(o.finish_reason == "length" for o in reply.outputs) and len(reply.outputs) == 2


def test_a_step_where_every_request_fails_alone_is_the_workers_fault(engine, monkeypatch):
    runtime = WorkerRuntime(engine, settings=None, threads=None)
    stop = StopCondition(eos_token_ids=())
    prompt = tuple(engine.tokenizer("hello there")["input_ids"])
    monkeypatch.setattr(engine, "_forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("device lost")))
    adds = (AddSpec("a", prompt, 3, stop, SamplingParams()), AddSpec("b", prompt, 3, stop, SamplingParams()))
    with pytest.raises(RuntimeError, match="device lost"):  # the worker fails; its requests are retried elsewhere
        runtime.step(StepCommand(1, ("a", "b"), (), adds))
    assert sorted(engine.waiting_ids()) == ["a", "b"]  # nothing changed: another step could run them
