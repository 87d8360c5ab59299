"""The padded batch KV store: joins right-align rows, leaves trim dead columns."""

from __future__ import annotations

import torch

from controlplane.live.kv_batch import BatchKV


def _filled(rows: int, lengths: list[int], value: float) -> BatchKV:
    """A store whose row i holds lengths[i] real tokens (right-aligned), every entry = value + i."""
    kv = BatchKV(num_layers=2, device=torch.device("cpu"), dtype=torch.float32, kv_heads=1, head_dim=2)
    kv.reset_rows(rows)
    width = max(lengths)
    real = torch.zeros(rows, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        real[i, width - n :] = 1
    cache = kv.forward_cache(None, width)
    for layer in range(2):
        k = torch.stack([torch.full((1, width, 2), value + i) for i in range(rows)])
        cache.update(k, k.clone(), layer)
    kv.commit(real)
    return kv


def test_prefill_padding_is_zeroed_and_masked():
    kv = _filled(2, [3, 1], 1.0)
    assert kv.length == 3 and kv.valid_tokens() == 4
    assert kv.mask[:, :3].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert kv.keys[0][1, 0, :2].abs().sum() == 0  # the padded slots hold zeros, not garbage


def test_extend_right_aligns_both_sides():
    kv = _filled(1, [2], 1.0)
    kv.extend(_filled(2, [4, 1], 10.0))
    assert kv.rows == 3 and kv.length == 4
    assert kv.mask[:, :4].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert kv.keys[1][0, 0, 2:4, 0].tolist() == [1.0, 1.0]
    assert kv.keys[1][2, 0, 3, 0].item() == 11.0


def test_keep_drops_rows_and_unused_leading_columns():
    kv = _filled(3, [5, 2, 1], 0.0)
    kv.keep([1, 2])
    assert kv.rows == 2 and kv.length == 2
    assert kv.mask[:, :2].tolist() == [[1, 1], [0, 1]]
    kv.keep([])
    assert kv.rows == 0 and kv.nbytes() == 0


def test_subset_forward_leaves_a_masked_hole_for_idle_rows():
    kv = _filled(3, [2, 2, 2], 0.0)
    cache = kv.forward_cache([0, 2], 1)
    for layer in range(2):
        k, _ = cache.update(torch.ones(2, 1, 1, 2), torch.ones(2, 1, 1, 2), layer)
        assert k.shape == (2, 1, 3, 2)
    kv.commit()
    assert kv.mask[:, 2].tolist() == [1, 0, 1]
    assert kv.valid_tokens() == 8
