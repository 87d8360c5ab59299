"""Profiling rows in the simulator's format."""

from __future__ import annotations

import json

import pytest

from controlplane.hardware.profile_format import ROW_FIELDS as ROW_KEYS
from controlplane.hardware.profile_format import write_profile
from controlplane.live.profiling import ProfileGrid, profile_backend, profile_meta


def test_profile_rows_cover_the_grid(engine, tmp_path):
    grid = ProfileGrid(prefill_tokens=(0, 8), decode_batch_sizes=(0, 1, 3), context_lens=(5, 20), repeats=2)
    rows = profile_backend(engine, grid)
    # (b=0: prefill only, once) + (b in 1,3) x (ctx 5, 20) x (prefill 0, 8) = 1 + 8 points, 2 repeats each
    assert len(rows) == 18
    for row in rows:
        assert set(row) == set(ROW_KEYS) and row["iteration_s"] > 0
        assert row["num_prefill_tokens"] in (0, 8) and row["num_prefill_seqs"] == (1 if row["num_prefill_tokens"] else 0)
        assert row["sum_prefill_context"] == 0
    decode_rows = [r for r in rows if r["num_decode_seqs"] == 3]
    assert min(r["sum_decode_context"] for r in decode_rows) >= 3 * 5
    assert max(r["sum_decode_context"] for r in decode_rows) >= 3 * 20
    assert engine.num_running == 0 and engine.num_waiting == 0  # the profiler cleans up

    path = write_profile(tmp_path / "p.json", rows, profile_meta(engine))
    doc = json.loads(path.read_text())
    assert doc["format"] == "controlplane-profile/1"
    assert doc["model"] == "tiny-llama" and doc["device"] == "cpu" and doc["precision"] == "fp32"
    assert doc["compiled"] is False and len(doc["rows"]) == 18


def test_profile_fits_the_simulator_model(engine, tmp_path):
    from sim.latency.measured import MeasuredProfileModel

    rows = profile_backend(engine, ProfileGrid(prefill_tokens=(0, 16), decode_batch_sizes=(0, 2), context_lens=(8,), repeats=2))
    path = write_profile(tmp_path / "p.json", rows, profile_meta(engine))
    model = MeasuredProfileModel.from_file(path)
    assert model.meta["model"] == "tiny-llama"


def test_points_skip_empty_and_oversized_shapes(tiny_loaded):
    from controlplane.live.backend import CausalLMBackend

    small = CausalLMBackend(tiny_loaded, max_seq_len=32)
    rows = profile_backend(small, ProfileGrid(prefill_tokens=(0, 64), decode_batch_sizes=(0, 2), context_lens=(8, 500), repeats=1))
    assert rows and all(r["num_prefill_tokens"] == 0 for r in rows)  # 64-token prompts do not fit
    assert all(r["sum_decode_context"] < 2 * 32 for r in rows)


def test_a_grid_without_mixed_shapes_and_interleaved_passes(engine):
    grid = ProfileGrid(prefill_tokens=(0, 8), decode_batch_sizes=(0, 1, 3), context_lens=(5, 20), repeats=3,
                       mixed=False, interleave=True)
    points = list(grid.points())
    assert all(not (tokens and batch) for _, batch, tokens, _ in points) and len(points) == 1 + 4
    seen = []
    rows = profile_backend(engine, grid, progress=lambda done, total: seen.append((done, total)))
    assert len(rows) == 3 * len(points) and seen[-1] == (15, 15)
    # One pass over the grid after another: every point once per pass, in the same order.
    shape = [(r["num_prefill_tokens"], r["num_decode_seqs"]) for r in rows]
    assert shape[:5] == shape[5:10] == shape[10:]
    assert engine.num_running == 0 and engine.num_waiting == 0


def test_a_spread_grid_times_mixed_length_batches_with_their_padding(engine):
    grid = ProfileGrid(prefill_tokens=(0, 16), prefill_seqs=(1, 3), decode_batch_sizes=(0, 1, 3), context_lens=(20,),
                       repeats=1, spread=True)
    rows = profile_backend(engine, grid)
    three = [r for r in rows if r["num_decode_seqs"] == 3 and not r["num_prefill_seqs"]]
    # Contexts spread from half the length up to it (10, 15, 20 tokens, then a token more per step):
    # the engine computes 3 x the longest.
    assert three and all(r["padded_decode_context"] - r["sum_decode_context"] == 10 + 5 for r in three)
    prompts = [r for r in rows if r["num_prefill_seqs"] == 3 and not r["num_decode_seqs"]]
    assert prompts and all(r["padded_prefill_tokens"] == 48 and r["num_prefill_tokens"] == 8 + 12 + 16
                           for r in prompts)
    one = [r for r in rows if r["num_decode_seqs"] == 1 and not r["num_prefill_seqs"]]
    assert one and all(r["padded_decode_context"] == r["sum_decode_context"] >= 20 for r in one)


def test_a_grid_from_the_model_limits_alone():
    grid = ProfileGrid.from_limits(256, 48, 32)
    assert tuple(grid.prefill_tokens) == (0, 16, 64, 256) and tuple(grid.context_lens) == (38, 152, 304)
    assert tuple(grid.decode_batch_sizes) == (0, 1, 2, 4, 8, 16, 32) and tuple(grid.prefill_seqs) == (1, 4)
    assert grid.interleave and grid.spread and grid.mixed and grid.repeats == 2
    small = ProfileGrid.from_limits(32, 8, 3, 1, mixed=False)
    assert tuple(small.prefill_tokens) == (0, 16, 32) and tuple(small.decode_batch_sizes) == (0, 1, 2, 3)
    assert not any(tokens and batch for _, batch, tokens, _ in small.points())  # no mixed shapes
    with pytest.raises(ValueError, match="max_batch=0"):
        ProfileGrid.from_limits(32, 8, 0)


def test_controlplane_profile_times_the_grid_of_the_model_limits_and_prints_its_hash(tmp_path):
    import hashlib

    from typer.testing import CliRunner

    from controlplane.cli import bench

    out = tmp_path / "limits.json"
    res = CliRunner().invoke(bench.app, ["profile", "--preset", "tiny-llama", "--device", "cpu", "--threads", "1",
                                         "--grid", "limits", "--max-prompt-tokens", "16", "--max-output-tokens", "4",
                                         "--max-batch", "2", "--repeats", "1", "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["grid"] == "limits" and doc["spread"] and doc["interleaved"]
    assert {r["num_decode_seqs"] for r in doc["rows"]} == {0, 1, 2}
    assert max(r["num_prefill_tokens"] / max(1, r["num_prefill_seqs"]) for r in doc["rows"]) <= 16
    assert hashlib.sha256(out.read_bytes()).hexdigest() in res.output.replace("\n", "")
