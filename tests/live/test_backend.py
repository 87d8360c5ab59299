"""The continuous-batching engine: batched results equal one-at-a-time results, stops, streaming."""

from __future__ import annotations

import random

import pytest
import torch

from controlplane.live.backend import CausalLMBackend, SamplingParams, StopCondition

NO_EOS = StopCondition(eos_token_ids=())


def _prompts(n: int, seed: int = 0, lo: int = 2, hi: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, 260) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def _run_all(engine: CausalLMBackend, step_plan) -> dict[str, list]:
    """Drive the engine until idle; ``step_plan(step, waiting, running)`` picks (prefill, decode)."""
    tokens: dict[str, list[int]] = {}
    text: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    step = 0
    while engine.num_waiting or engine.num_running:
        prefill, decode = step_plan(step, engine.waiting_ids(), engine.running_ids())
        result = engine.step(prefill, decode)
        assert {o.request_id for o in result.outputs} == set(prefill) | set(decode)
        for out in result.outputs:
            tokens.setdefault(out.request_id, []).append(out.token_id)
            text.setdefault(out.request_id, []).append(out.text_delta)
            if out.finished:
                reasons[out.request_id] = out.finish_reason
                assert not engine.has_request(out.request_id)
        step += 1
        assert step < 10_000
    return {"tokens": tokens, "text": {k: "".join(v) for k, v in text.items()}, "reasons": reasons}


# -- batched == sequential ------------------------------------------------------------------------
def test_batched_greedy_equals_sequential(engine):
    """Different prompt lengths (padding), staggered joins, partial decodes and early leavers."""
    prompts = _prompts(10)
    budgets = [12, 30, 5, 30, 18, 30, 1, 25, 30, 9]
    alone = [engine.generate_one(p, n, stop=NO_EOS).token_ids for p, n in zip(prompts, budgets)]
    assert len({tuple(a) for a in alone}) == len(alone)  # the random model is not degenerate
    for i, (p, n) in enumerate(zip(prompts, budgets)):
        engine.add_request(f"r{i}", p, max_new_tokens=n, stop=NO_EOS)

    def plan(step, waiting, running):
        prefill = waiting[:3]  # up to three joins per iteration, while others decode
        decode = running[::2] if step % 4 == 3 else running  # sometimes decode only a subset
        return prefill, decode

    got = _run_all(engine, plan)
    for i, want in enumerate(alone):
        assert got["tokens"][f"r{i}"] == want, f"request r{i} diverged"
    assert engine.kv_tokens_in_use == 0 and engine.kv_bytes_allocated == 0


def test_batched_equals_sequential_after_removals(engine):
    prompts = _prompts(6, seed=3)
    alone = [engine.generate_one(p, 20, stop=NO_EOS).token_ids for p in prompts]
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, max_new_tokens=20, stop=NO_EOS)
    engine.step(["r0", "r1", "r2", "r3", "r4", "r5"], [])
    for _ in range(3):
        engine.step([], engine.running_ids())
    assert engine.remove("r2") and engine.remove("r4")
    assert not engine.remove("r2")
    got = _run_all(engine, lambda s, w, r: ([], r))
    for i in (1, 3, 5):
        assert [*alone[i][:4], *got["tokens"][f"r{i}"]] == alone[i]


def test_step_reports_shape_and_kv_usage(engine):
    engine.add_request("a", [5] * 7, max_new_tokens=10, stop=NO_EOS)
    engine.add_request("b", [6] * 3, max_new_tokens=10, stop=NO_EOS)
    first = engine.step(["a", "b"], [])
    assert (first.num_prefill_seqs, first.num_prefill_tokens, first.padded_prefill_tokens) == (2, 10, 14)
    assert first.num_decode_seqs == 0 and first.duration_s > 0
    assert engine.num_running == 2 and engine.kv_tokens_in_use == 10
    engine.add_request("c", [7] * 4, max_new_tokens=10, stop=NO_EOS)
    mixed = engine.step(["c"], ["a", "b"])
    assert mixed.num_decode_seqs == 2 and mixed.sum_decode_context == 10  # KV before this iteration
    assert mixed.num_prefill_tokens == 4 and mixed.sum_prefill_context == 0
    assert engine.kv_tokens_in_use == 12 + 4
    row = mixed.profile_row()
    assert set(row) == {
        "num_prefill_tokens",
        "num_prefill_seqs",
        "num_decode_seqs",
        "sum_decode_context",
        "sum_prefill_context",
        "iteration_s",
    }
    # What the padded engine computed: the decode attends over the batch's longest KV (7) per row.
    padded = mixed.profile_row(padded=True)
    assert (padded["padded_prefill_tokens"], padded["padded_decode_context"]) == (4, 2 * 7)
    assert first.profile_row(padded=True)["padded_prefill_tokens"] == 14
    assert engine.kv_bytes_allocated > 0
    assert engine._kv.valid_tokens() == 16  # the padded cache agrees with the bookkeeping
    assert engine.remove("a") and engine.kv_tokens_in_use == 4 + 4 == engine._kv.valid_tokens()


def test_a_recomputed_request_continues_its_stream(engine):
    """Registered again with the output it had (after a preemption): prefilled with it, its
    stream goes on where it stopped, and its budget counts what it had generated."""
    prompt = [5, 9, 13, 17, 21]
    whole = engine.generate_one(prompt, 8, stop=NO_EOS)
    engine.add_request("r", prompt, max_new_tokens=8, stop=NO_EOS, generated=whole.token_ids[:3])
    outs = [engine.step(["r"], []).by_id["r"]]
    while not outs[-1].finished:
        outs.append(engine.step([], ["r"]).by_id["r"])
    assert [o.token_id for o in outs] == whole.token_ids[3:]
    assert outs[-1].num_generated == 8 and outs[-1].finish_reason == "length"
    head = engine.generate_one(prompt, 3, stop=NO_EOS).text
    assert head + "".join(o.text_delta for o in outs) == whole.text


def test_bad_calls_are_rejected(engine):
    engine.add_request("a", [5, 6], max_new_tokens=3)
    with pytest.raises(ValueError):
        engine.add_request("a", [5, 6], max_new_tokens=3)
    with pytest.raises(ValueError):
        engine.add_request("empty", [], max_new_tokens=3)
    with pytest.raises(ValueError):
        engine.add_request("oov", [10_000], max_new_tokens=3)
    with pytest.raises(ValueError):
        engine.add_request("long", [5] * 256, max_new_tokens=3)
    with pytest.raises(KeyError):
        engine.step([], ["a"])  # not prefilled yet
    with pytest.raises(KeyError):
        engine.step(["nope"], [])
    engine.step(["a"], [])
    with pytest.raises(KeyError):
        engine.step(["a"], [])  # already running


def test_max_seq_len_caps_generation(tiny_loaded):
    engine = CausalLMBackend(tiny_loaded, max_seq_len=16)
    out = engine.generate_one([5] * 10, 100, stop=NO_EOS)
    assert len(out.token_ids) == 6 and out.finish_reason == "length"


# -- stop conditions ------------------------------------------------------------------------------
def test_stop_on_eos_token(engine):
    free = engine.generate_one([9, 8, 7, 6], 20, stop=NO_EOS)
    eos = free.token_ids[5]
    first = free.token_ids.index(eos)
    out = engine.generate_one([9, 8, 7, 6], 20, stop=StopCondition(eos_token_ids=(eos,)))
    assert out.finish_reason == "eos"
    assert out.token_ids == free.token_ids[: first + 1]  # the eos id is reported...
    assert out.text == engine.tokenizer.decode(free.token_ids[:first])  # ...but not in the text


def test_model_eos_is_the_default(engine):
    assert engine.eos_token_ids == (2,)


def test_stop_on_token_sequence(engine):
    free = engine.generate_one([11, 12, 13], 20, stop=NO_EOS)
    seq = tuple(free.token_ids[6:8])
    out = engine.generate_one([11, 12, 13], 20, stop=StopCondition(eos_token_ids=(), stop_token_sequences=(seq,)))
    assert out.finish_reason == "stop"
    end = next(i + 2 for i in range(len(free.token_ids)) if tuple(free.token_ids[i : i + 2]) == seq)
    assert out.token_ids == free.token_ids[:end]
    assert out.text == engine.tokenizer.decode(free.token_ids[: end - 2])


def test_stop_on_string_truncates_text(engine):
    prompt = list(b"Once upon a time")
    free = engine.generate_one(prompt, 40, stop=NO_EOS)
    assert len(free.text) > 12
    stop = free.text[8:11]
    out = engine.generate_one(prompt, 40, stop=StopCondition(eos_token_ids=(), stop_strings=(stop, "\x00never")))
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.index(stop)]
    assert len(out.token_ids) < len(free.token_ids)


def test_length_limit_from_either_place(engine):
    a = engine.generate_one([5, 6, 7], 7, stop=NO_EOS)
    b = engine.generate_one([5, 6, 7], 50, stop=StopCondition(eos_token_ids=(), max_new_tokens=7))
    assert a.finish_reason == b.finish_reason == "length"
    assert len(a.token_ids) == 7 and a.token_ids == b.token_ids


# -- streaming ------------------------------------------------------------------------------------
def test_stream_deltas_concatenate_to_the_text(engine):
    tok = engine.tokenizer
    prompts = [tok("héllo wörld ").input_ids, tok("日本語").input_ids, list(range(100, 140))]
    for i, p in enumerate(prompts):
        engine.add_request(f"s{i}", p, max_new_tokens=40, stop=NO_EOS)
    got = _run_all(engine, lambda s, w, r: (w, r))
    for i in range(len(prompts)):
        ids = got["tokens"][f"s{i}"]
        assert got["text"][f"s{i}"] == tok.decode(ids)


def test_stream_holds_back_stop_string_prefixes(engine):
    prompt = list(b"The answer is")
    free = engine.generate_one(prompt, 30, stop=NO_EOS)
    stop = free.text[10:14]
    engine.add_request("s", prompt, max_new_tokens=30, stop=StopCondition(eos_token_ids=(), stop_strings=(stop,)))
    got = _run_all(engine, lambda s, w, r: (w, r))
    assert got["text"]["s"] == free.text[: free.text.index(stop)]
    assert stop not in got["text"]["s"]


# -- sampling -------------------------------------------------------------------------------------
def test_seeded_sampling_is_reproducible_in_any_batch(engine):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=123)
    alone = engine.generate_one([5, 6, 7, 8], 15, stop=NO_EOS, sampling=params).token_ids
    rng_state = torch.random.get_rng_state()
    engine.add_request("x", [5, 6, 7, 8], max_new_tokens=15, stop=NO_EOS, sampling=params)
    for i, p in enumerate(_prompts(4, seed=9)):
        engine.add_request(f"o{i}", p, max_new_tokens=15, stop=NO_EOS, sampling=SamplingParams(temperature=0.8, seed=i))
    got = _run_all(engine, lambda s, w, r: (w, r))
    assert got["tokens"]["x"] == alone
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # per-request generators only
    greedy = engine.generate_one([5, 6, 7, 8], 15, stop=NO_EOS).token_ids
    other_seed = engine.generate_one(
        [5, 6, 7, 8], 15, stop=NO_EOS, sampling=SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    ).token_ids
    assert alone != greedy and alone != other_seed


def test_sampling_params_validate():
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        StopCondition(stop_strings=("",))
    assert StopCondition(eos_token_ids=[1, 2]).eos_token_ids == (1, 2)


def test_top_k_one_is_greedy(engine):
    greedy = engine.generate_one([3, 4, 5], 10, stop=NO_EOS).token_ids
    k1 = engine.generate_one([3, 4, 5], 10, stop=NO_EOS, sampling=SamplingParams(temperature=1.5, top_k=1, seed=1))
    assert k1.token_ids == greedy


# -- other precisions through the engine ----------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_engine_runs_other_precisions(precision):
    from controlplane.live.model_source import WorkerModelSettings

    engine = CausalLMBackend.from_settings(
        WorkerModelSettings(preset="tiny-llama", precision=precision, device="cpu", max_seq_len=128)
    )
    prompts = _prompts(3, seed=5)
    for i, p in enumerate(prompts):
        engine.add_request(f"q{i}", p, max_new_tokens=6, stop=NO_EOS)
    got = _run_all(engine, lambda s, w, r: (w, r))
    assert all(len(got["tokens"][f"q{i}"]) == 6 for i in range(3))
    # No batched == alone check here: torch dynamic int8 quantizes activations with one scale per
    # tensor, i.e. across the whole batch, so a row's output depends on its batch-mates.


def test_a_failed_step_leaves_the_engine_unchanged(engine):
    prompts = _prompts(3, seed=11)
    alone = [engine.generate_one(p, 8, stop=NO_EOS).token_ids for p in prompts]
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, max_new_tokens=8, stop=NO_EOS)
    engine.step(["r0", "r1"], [])
    before = (engine.kv_tokens_in_use, engine.running_ids(), engine.waiting_ids(), engine._kv.length)
    real_forward = engine._forward
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the prefill forward succeeded, the decode forward fails
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    engine._forward = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.step(["r2"], ["r0", "r1"])
    engine._forward = real_forward
    assert (engine.kv_tokens_in_use, engine.running_ids(), engine.waiting_ids(), engine._kv.length) == before
    got = _run_all(engine, lambda s, w, r: (w, r))
    assert [got["tokens"]["r0"], got["tokens"]["r1"]] == [alone[0][1:], alone[1][1:]]
    assert got["tokens"]["r2"] == alone[2]


def test_the_docs_engine_snippet_prints_the_requests_text():
    """docs/live-workers.md's batching-engine example: its output is the request's whole text, a
    delta per token (it left out the first token's, which the prefill step gives)."""
    import re
    from pathlib import Path

    docs = Path(__file__).parents[2] / "docs" / "live-workers.md"
    text = docs.read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index("## The batching engine"):], re.S).group(1)
    printed: list[str] = []
    scope: dict = {"print": lambda text, end="\n": printed.append(text)}
    exec(compile(code, str(docs), "exec"), scope)  # noqa: S102 - the docs' own example
    engine, ids = scope["engine"], scope["ids"]
    engine.add_request("again", ids, max_new_tokens=64, stop=StopCondition(stop_strings=("\n\n",)),
                       sampling=SamplingParams(temperature=0.8, top_p=0.95, seed=1))
    tokens = [o.token_id for o in engine.step(["again"], []).outputs]
    while engine.num_running:
        tokens += [o.token_id for o in engine.step([], engine.running_ids()).outputs]
    # (the streamed text leaves special tokens out, as the engine's detokenizer does)
    assert len(printed) == len(tokens) and "".join(printed) == engine.tokenizer.decode(tokens, skip_special_tokens=True)


@pytest.mark.parametrize("preset", ["tiny-llama", "small-llama", "medium-llama"])
def test_the_docs_preset_sizes_are_the_models(preset):
    """docs/live-workers.md's parameter counts (small-llama said 20M, medium-llama 101M)."""
    import re
    from pathlib import Path

    from controlplane.live.model_source import WorkerModelSettings, build_config
    from transformers import AutoModelForCausalLM

    row = (Path(__file__).parents[2] / "docs" / "live-workers.md").read_text()
    said = float(re.search(rf"`{preset}` \([^)]*?([\d.]+)M", row).group(1))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_config(WorkerModelSettings(preset=preset)))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == said
