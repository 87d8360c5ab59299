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


def _rows_content(kv: BatchKV) -> list[list[float]]:
    """Each row's real tokens (layer 0 keys, first feature), in order: the store's logical content."""
    return [kv.row_tokens(i)[0][0][0, :, 0].tolist() for i in range(kv.rows)]


def test_hole_filling_order_moves_only_the_last_rows():
    from controlplane.live.kv_batch import hole_filling_order

    assert hole_filling_order([0, 1, 2]) == [0, 1, 2]
    assert hole_filling_order([0, 2, 3, 4]) == [0, 4, 2, 3]  # the hole at 1 takes the last row
    assert hole_filling_order([3, 4]) == [3, 4]
    assert hole_filling_order([]) == []


def test_joins_and_leaves_do_not_copy_the_batch():
    """A join writes into spare rows and a leave moves only the rows that fill the holes: the
    storage (and the rows that stay) is not reallocated or copied at every membership change."""
    kv = _filled(1, [6], 0.0)
    kv.extend(_filled(3, [5, 4, 2], 10.0))  # grows the row storage once
    storage = kv._k[0].data_ptr()
    kv.keep([0, 1, 3])  # row 2 leaves: row 3 fills its hole
    kv.extend(_filled(1, [3], 20.0))  # shorter than the batch: a spare row, no new storage
    assert kv._k[0].data_ptr() == storage
    assert _rows_content(kv) == [[0.0] * 6, [10.0] * 5, [12.0] * 2, [20.0] * 3]
    assert kv.mask[:, : kv.length].sum(dim=1).tolist() == [6, 5, 2, 3]


def test_a_longer_join_takes_spare_columns_on_the_left_and_zeroes_them():
    kv = _filled(2, [5, 5], 1.0)
    kv.keep([1])  # trims nothing; then a long row leaves room on the left after a trim
    kv.extend(_filled(1, [2], 5.0))
    kv.keep([1])  # only the short row is left: its leading columns are dropped (start moves right)
    assert kv.length == 2
    kv.extend(_filled(1, [4], 9.0))  # 2 columns more on the left, from the spare ones
    assert kv.length == 4
    assert kv.mask[:, :4].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert kv.keys[0][0, 0, :2].abs().sum() == 0  # the row's new padding is zeros, not the old row's data
    assert _rows_content(kv) == [[5.0, 5.0], [9.0] * 4]


def test_random_joins_and_leaves_keep_every_row_right_aligned():
    import random

    rng = random.Random(3)
    kv = _filled(2, [3, 7], 0.0)
    model = [[0.0] * 3, [1.0] * 7]  # each row's real tokens
    for step in range(60):
        if model and rng.random() < 0.4:  # some rows leave
            alive = sorted(rng.sample(range(len(model)), rng.randrange(len(model) + 1)))
            from controlplane.live.kv_batch import hole_filling_order

            order = hole_filling_order(alive)
            kv.keep(order)
            model = [model[i] for i in order]
        else:  # a few rows join, sometimes longer than the batch
            lengths = [rng.randrange(1, 12) for _ in range(rng.randrange(1, 4))]
            base = 100.0 * (step + 1)
            kv.extend(_filled(len(lengths), lengths, base))
            model += [[base + i] * n for i, n in enumerate(lengths)]
        assert kv.rows == len(model)
        assert _rows_content(kv) == model
        if model:
            assert kv.length == max(len(r) for r in model)  # leading unused columns are dropped
            for i, r in enumerate(model):  # right-aligned: the last column is every row's last token
                assert kv.mask[i, kv.length - len(r) : kv.length].all()
                assert kv.mask[i, : kv.length - len(r)].sum() == 0
                assert kv.keys[0][i, :, : kv.length - len(r)].abs().sum() == 0


def test_a_batch_that_shrank_gives_spare_rows_back_when_its_storage_grows():
    kv = _filled(1, [2], 0.0)
    kv.extend(_filled(40, [2] * 40, 1.0))
    assert kv._m.shape[0] >= 41
    kv.keep([0, 1])
    for _ in range(80):  # decode steps until the columns run out and the storage is laid out again
        cache = kv.forward_cache(None, 1)
        for layer in range(2):
            cache.update(torch.ones(2, 1, 1, 2), torch.ones(2, 1, 1, 2), layer)
        kv.commit()
    assert kv._m.shape[0] == 3 and kv.rows == 2 and kv.length == 82
    assert _rows_content(kv) == [[0.0] * 2 + [1.0] * 80, [1.0] * 82]


def _count_relayouts(kv: BatchKV) -> list[int]:
    calls: list[int] = []
    relayout = kv._relayout

    def counted(*args, **kwargs):
        calls.append(1)
        relayout(*args, **kwargs)

    kv._relayout = counted  # type: ignore[method-assign]
    return calls


def test_a_growing_batch_copies_its_cache_a_few_times_only():
    """Each growth of the rows copies the whole cache: they double, so 1 to 100 joins copy it 7 times."""
    kv = _filled(1, [4], 0.0)
    calls = _count_relayouts(kv)
    for i in range(99):
        kv.extend(_filled(1, [3], float(i + 1)))
    assert kv.rows == 100 and len(calls) == 7  # 2, 4, ..., 128 rows (at 1.5x it was 12)
    assert _rows_content(kv)[:3] == [[0.0] * 4, [1.0] * 3, [2.0] * 3]


def test_a_batch_that_breathes_keeps_its_rows_when_its_columns_are_laid_out_again():
    kv = _filled(1, [2], 0.0)
    kv.extend(_filled(39, [2] * 39, 1.0))
    rows = kv._m.shape[0]
    kv.keep(list(range(12)))  # 12 of 40: over a quarter of the rows still in use
    for _ in range(80):  # decode until the columns run out and the storage is laid out again
        cache = kv.forward_cache(None, 1)
        for layer in range(2):
            cache.update(torch.ones(12, 1, 1, 2), torch.ones(12, 1, 1, 2), layer)
        kv.commit()
    assert kv._m.shape[0] == rows and kv.rows == 12 and kv.length == 82
    calls = _count_relayouts(kv)
    kv.extend(_filled(28, [2] * 28, 5.0))  # the next burst of joins fits the rows it kept
    assert not calls and kv.rows == 40
    assert _rows_content(kv)[0] == [0.0] * 2 + [1.0] * 80 and _rows_content(kv)[-1] == [32.0] * 2
