"""The measured model's fit is robust to one bad row (a stall, a 0 s timing), and names such rows."""

from __future__ import annotations

import re
import warnings

import pytest

from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel

PREFILL_256 = IterationShape((256,))
DECODE_1 = IterationShape(decode_context_tokens=[300])
DECODE_8 = IterationShape(decode_context_tokens=[300] * 8)


def _rows() -> list[dict]:
    """Exact timings of a known cost: decodes of 1-32 sequences, one- and four-prompt prefills, three of each."""
    rows = []
    for _ in range(3):
        for n in (1, 2, 4, 8, 16, 32):
            rows.append({"num_prefill_tokens": 0, "num_prefill_seqs": 0, "num_decode_seqs": n,
                         "sum_decode_context": 300 * n, "sum_prefill_context": 0,
                         "iteration_s": 0.02 + 0.0005 * n + 1e-6 * 300 * n})
        for seqs in (1, 4):
            for tokens in (16, 64, 256, 1024):
                rows.append({"num_prefill_tokens": tokens, "num_prefill_seqs": seqs, "num_decode_seqs": 0,
                             "sum_decode_context": 0, "sum_prefill_context": 0,
                             "iteration_s": 0.02 + 0.0004 * tokens + 0.01 * seqs})
    return rows


def _prices(rows: list[dict]) -> tuple[float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = MeasuredProfileModel.fit(rows)
    return m.iteration_s(PREFILL_256), m.iteration_s(DECODE_1), m.iteration_s(DECODE_8)


@pytest.mark.parametrize("stalled_s", [0.5, 0.0, 1e-7])
def test_one_bad_prefill_row_leaves_the_prices_where_they_were(stalled_s):
    # a 16-token prefill stalled at 0.5 s took a 256-token prefill from 129.5 ms to 244.9 ms (the per-batch-size
    # factor was the mean of measured / fitted ratios); a 0 s row, weighed by 1 / its time squared, took the fit
    # near 0 s and the factors to 1e5
    rows = _rows()
    clean = _prices(rows)
    rows[6]["iteration_s"] = stalled_s  # the first one-prompt 16-token prefill
    assert _prices(rows) == pytest.approx(clean, rel=0.05)


def test_one_bad_decode_row_leaves_the_prices_where_they_were():
    rows = _rows()
    clean = _prices(rows)
    rows[0]["iteration_s"] = 1.0  # a one-sequence decode step at 1 s (40x)
    assert _prices(rows) == pytest.approx(clean, rel=0.05)


def test_rows_far_from_the_fit_are_named_in_a_warning():
    rows = _rows()
    rows[6]["iteration_s"] = 0.5
    rows[20]["iteration_s"] = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MeasuredProfileModel.fit(rows)
    far = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "far from the fit" in str(w.message)]
    assert len(far) == 1 and re.search(r"profile: 2 row\(s\) measured far from the fit .*row 7 \(0\.5 s, \d+x\), "
                                       r"row 21 \(0 s, 0x\)", far[0]), far
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MeasuredProfileModel.fit(_rows())  # exact rows: no warning
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []

