"""Model sources and precisions on the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from pydantic import ValidationError

from controlplane.live.model_source import PRESETS, WorkerModelSettings, load_model, load_tokenizer
from controlplane.live.quantize import (
    PrecisionUnavailable,
    int8_unavailable_reason,
    model_bytes,
    nf4_unavailable_reason,
)
from controlplane.live.tokenizer import MIN_VOCAB, build_byte_tokenizer

PROMPT = torch.tensor([[10, 20, 30, 40, 50, 60]])


def _logits(loaded) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model(input_ids=PROMPT).logits[0, -1].float()


def _cpu(precision: str) -> WorkerModelSettings:
    return WorkerModelSettings(preset="tiny-llama", precision=precision, device="cpu", max_seq_len=128)


# -- settings ------------------------------------------------------------------------------------
def test_settings_reject_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        WorkerModelSettings(preset="tiny-llama", bogus=1)
    with pytest.raises(ValidationError):
        WorkerModelSettings(preset="tiny-llama", config={"model_type": "llama"})
    with pytest.raises(ValidationError):
        WorkerModelSettings(preset="no-such-model")
    with pytest.raises(ValidationError):
        WorkerModelSettings(device="tpu")
    with pytest.raises(ValidationError):
        WorkerModelSettings(precision="int4")
    with pytest.raises(ValidationError):
        WorkerModelSettings(config={"hidden_size": 64})  # no model_type
    assert WorkerModelSettings().source_name() == "tiny-llama"
    assert WorkerModelSettings(device="cuda:1").device == "cuda:1"


def test_compile_mode_is_one_torch_compile_knows():
    """torch.compile's documented modes, and the installed torch's own list (its inductor's list_mode_options)."""
    from torch._inductor import list_mode_options

    from controlplane.live.model_source import COMPILE_MODES, torch_compile_modes

    assert set(COMPILE_MODES) <= set(list_mode_options()) and torch_compile_modes() == tuple(list_mode_options())
    for mode in torch_compile_modes():
        assert WorkerModelSettings(compile=True, compile_mode=mode).compile_mode == mode
    with pytest.raises(ValidationError, match="unknown compile_mode 'turbo'; torch.compile's modes: default, "):
        WorkerModelSettings(compile=True, compile_mode="turbo")


def test_presets_suit_quantization_kernels():
    for cfg in PRESETS.values():
        assert cfg["hidden_size"] % 64 == 0 and cfg["intermediate_size"] % 64 == 0
        assert cfg["vocab_size"] >= MIN_VOCAB


# -- loading each precision ----------------------------------------------------------------------
def test_fp32_is_the_cpu_default_and_deterministic(tiny_loaded):
    assert tiny_loaded.precision == "fp32" and tiny_loaded.device == torch.device("cpu")
    params = sum(p.numel() for p in tiny_loaded.model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in tiny_loaded.model.buffers())  # rotary tables
    assert tiny_loaded.model_bytes == params * 4 + buffers
    auto = load_model(WorkerModelSettings(preset="tiny-llama", device="cpu", max_seq_len=128))
    assert auto.precision == "fp32"
    assert torch.equal(_logits(auto), _logits(tiny_loaded))  # same seed, same weights


def test_seed_changes_weights_and_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a = load_model(_cpu("fp32"))
    b = load_model(WorkerModelSettings(preset="tiny-llama", device="cpu", seed=1, max_seq_len=128))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(_logits(a), _logits(b))


def test_replicas_loading_at_once_on_threads_get_the_same_weights():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # as a thread pool's workers start together
        loaded = list(pool.map(lambda _: load_model(_cpu("fp32")), range(4)))
    first = _logits(loaded[0])
    assert all(torch.equal(_logits(m), first) for m in loaded[1:])


def test_bf16_halves_the_size():
    fp32, bf16 = load_model(_cpu("fp32")), load_model(_cpu("bf16"))
    assert bf16.dtype == torch.bfloat16
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.model_bytes * 2 == fp32.model_bytes
    assert torch.isfinite(_logits(bf16)).all()


def test_fp16_on_cpu_warns():
    with pytest.warns(RuntimeWarning, match="fp16 on CPU"):
        loaded = load_model(_cpu("fp16"))
    assert loaded.dtype == torch.float16


def test_int8_quantizes_linears_and_counts_packed_weights():
    fp32 = load_model(_cpu("fp32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # our own load must not spam deprecations
        int8 = load_model(_cpu("int8"))
    q_proj = int8.model.model.layers[0].self_attn.q_proj
    assert "quantized" in type(q_proj).__module__
    assert type(int8.model.lm_head) is torch.nn.Linear  # the head stays full precision
    # body linears at 1 byte/weight; embeddings, norms and head still fp32
    assert int8.model_bytes < 0.4 * fp32.model_bytes
    assert int8.model_bytes > sum(p.numel() for p in int8.model.parameters()) * 4  # packed weights counted
    ref, out = _logits(fp32), _logits(int8)
    assert torch.isfinite(out).all()
    assert torch.nn.functional.cosine_similarity(ref, out, dim=0) > 0.95


def test_int8_reasons_name_the_device():
    assert int8_unavailable_reason(torch.device("cpu")) is None
    assert "CPU" in int8_unavailable_reason(torch.device("cuda"))


def test_nf4_loads_or_says_why():
    reason = nf4_unavailable_reason("cpu")
    if reason:
        with pytest.raises(PrecisionUnavailable, match="bitsandbytes"):
            load_model(_cpu("nf4"))
        pytest.skip(f"nf4 on CPU unavailable: {reason}")
    from bitsandbytes.nn import Linear4bit

    nf4, int8 = load_model(_cpu("nf4")), load_model(_cpu("int8"))
    assert isinstance(nf4.model.model.layers[0].mlp.up_proj, Linear4bit)
    assert nf4.dtype == torch.bfloat16
    assert nf4.model_bytes < int8.model_bytes
    assert torch.isfinite(_logits(nf4)).all()


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(PrecisionUnavailable, match="CUDA is not available"):
        load_model(WorkerModelSettings(preset="tiny-llama", device="cuda"))


def test_model_bytes_counts_tied_weights_once():
    lin = torch.nn.Linear(8, 8, bias=False)
    seq = torch.nn.Sequential(lin, torch.nn.Linear(8, 8, bias=False))
    seq[1].weight = lin.weight
    assert model_bytes(seq) == 8 * 8 * 4


# -- local paths and tokenizers ------------------------------------------------------------------
def test_load_from_a_local_directory(tmp_path, tiny_loaded):
    tiny_loaded.model.save_pretrained(tmp_path)
    tiny_loaded.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(WorkerModelSettings(path=str(tmp_path), device="cpu", precision="fp32"))
    assert loaded.name == tmp_path.name
    assert torch.allclose(_logits(loaded), _logits(tiny_loaded))
    assert loaded.tokenizer.decode(loaded.tokenizer("héllo").input_ids) == "héllo"


def test_directory_without_tokenizer_gets_the_byte_tokenizer(tmp_path, tiny_loaded):
    tiny_loaded.model.save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path), tiny_loaded.config)
    assert len(tok) == tiny_loaded.config.vocab_size


def test_byte_tokenizer_round_trips_any_text():
    tok = build_byte_tokenizer(512)
    text = "héllo wörld, 世界! \n\t<tag>"
    ids = tok(text).input_ids
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert len(tok) == 512
    assert tok.decode([300]).startswith("<|x")  # ids past the bytes still decode
    assert tok.decode([tok.eos_token_id], skip_special_tokens=True) == ""
    with pytest.raises(ValueError):
        build_byte_tokenizer(100)


def test_load_model_names_a_missing_model_path(tmp_path):
    from controlplane.live.model_source import WorkerModelSettings, load_model

    with pytest.raises(ValueError, match="model path .*nope is not a directory"):
        load_model(WorkerModelSettings(path=str(tmp_path / "nope"), device="cpu"))


#: A GPT-2 worker.config: GPT-2 names its positions ``n_positions`` (its config class maps
#: ``max_position_embeddings`` onto it).
GPT2_128 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "vocab_size": 300, "n_positions": 128,
            "bos_token_id": 0, "eos_token_id": 0}


def test_a_configs_own_positions_are_kept_under_its_own_name_and_bound_what_is_served():
    """``n_positions: 128`` was replaced by max_seq_len (2048): /v1/models said max_model_len 2048 and
    generation ran past the model's 128 positions."""
    import asyncio

    from controlplane.live.driver import LiveDriver
    from controlplane.live.http_errors import InvalidRequest
    from controlplane.live.model_source import build_config
    from controlplane.live.pool_thread import LocalThreadPool
    from controlplane.live.served_model import load_served_model
    from controlplane.testing import make_config

    settings = WorkerModelSettings(config=GPT2_128, device="cpu")  # max_seq_len 2048
    cfg = build_config(settings)
    assert cfg.n_positions == 128 and cfg.max_position_embeddings == 128
    assert load_served_model("g", settings).max_seq_len == 128  # (what /v1/models reports as max_model_len)
    no_positions = {k: v for k, v in GPT2_128.items() if k != "n_positions"}
    assert build_config(WorkerModelSettings(config=no_positions, max_seq_len=96)).n_positions == 96  # (as before)
    assert build_config(WorkerModelSettings(config={**no_positions, "max_position_embeddings": 64})).n_positions == 64

    run = make_config(cluster={"models": [{"name": "g", "replicas": 1, "worker": {"config": GPT2_128, "device": "cpu"}}]})

    async def main():
        driver = LiveDriver(run, pool=LocalThreadPool(cpu_threads=1))
        await driver.start(wait_ready_s=120)
        try:
            near_the_end = await (await driver.submit([5] * 120, max_tokens=8, ignore_eos=True)).result()
            past_it = await (await driver.submit([5] * 120, max_tokens=9, ignore_eos=True)).result()
            with pytest.raises(InvalidRequest, match="the prompt has 130 tokens; the model's context is 128"):
                await driver.submit([5] * 130, max_tokens=2, ignore_eos=True)
        finally:
            await driver.close()
        return near_the_end, past_it

    near_the_end, past_it = asyncio.run(main())
    assert near_the_end.ok and near_the_end.completion_tokens == 8
    assert past_it.status == "rejected" and past_it.reason_code == "too_long"  # (the core's: prompt + output)
