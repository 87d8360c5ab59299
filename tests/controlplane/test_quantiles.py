"""Exact percentiles in bounded memory: equal to numpy's, bit for bit, spilled or not."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from controlplane.quantiles import SpilledValues, short_percentile, short_quantile

PS = (0, 1, 33.3, 50, 90, 99, 99.9, 100)


def _filled(data: np.ndarray, chunk: int) -> SpilledValues:
    s = SpilledValues(chunk)
    for v in data.tolist():
        s.append(v)
    return s


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 18])
@pytest.mark.parametrize("kind", ["lognormal", "normal", "few-distinct", "one-value", "single"])
def test_percentiles_equal_numpys_exactly(kind, chunk):
    rng = np.random.default_rng(3)
    data = {
        "lognormal": rng.lognormal(0.0, 2.0, 20_011),
        "normal": rng.normal(0.0, 1.0, 9_999),  # negative values too
        "few-distinct": rng.integers(0, 4, 12_000).astype(float) - 1.5,
        "one-value": np.full(5_000, 0.125),
        "single": np.array([3.0]),
    }[kind]
    s = _filled(data, chunk)
    assert len(s) == len(data)
    assert s.percentiles(PS) == [float(np.percentile(data, p)) for p in PS]
    assert s.mean() == pytest.approx(float(data.mean()), rel=1e-12, abs=1e-15)
    assert (s.spilled > 0) == (len(data) >= chunk)


def test_only_the_newest_chunk_stays_in_memory():
    s = _filled(np.arange(10_000, dtype=float), 1024)
    assert len(s.buffer) < 1024 and s.spilled == 10_000 - len(s.buffer)
    assert [float(x) for c in s.chunks() for x in c] == list(map(float, range(10_000)))  # order kept
    s.close()


def test_no_values_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="no values"):
        SpilledValues().percentiles([50])
    with pytest.raises(ValueError, match="no values"):
        SpilledValues().mean()


def test_a_run_summary_is_the_same_whether_its_latencies_were_spilled_or_not():
    from controlplane.config import SLOConfig
    from controlplane.metrics import LATENCY_METRICS, RunStats
    from controlplane.types import Request, RequestStatus

    rng = np.random.default_rng(5)
    slo = SLOConfig(ttft_s=1.0, tpot_s=0.05)
    in_memory, spilled = RunStats(), RunStats()
    spilled.values = {m: SpilledValues(64) for m in LATENCY_METRICS}
    for i in range(3_000):
        arrival = float(i)
        scheduled = arrival + float(rng.exponential(0.3))
        first = scheduled + float(rng.exponential(0.5))
        out = int(rng.integers(1, 200))
        r = Request(str(i), arrival, 100, out, status=RequestStatus.COMPLETED)
        r.scheduled_s, r.first_token_s, r.output_tokens = scheduled, first, out
        r.finish_s = first + out * float(rng.exponential(0.04))
        for stats in (in_memory, spilled):
            stats.on_arrival(r)
            stats.on_finished(r, slo)
    a, b = in_memory.summary(4_000.0), spilled.summary(4_000.0)
    assert all(v.spilled for v in spilled.values.values())
    assert a == b and 0 < a["slo_attainment"] < 1


def test_extend_is_appends_in_order_across_a_spill():
    one, many = SpilledValues(64), SpilledValues(64)
    values = [float(x) for x in np.random.default_rng(1).normal(size=300)]
    for v in values:
        one.append(v)
    many.extend(values[:10])
    many.extend(values[10:])  # past a chunk: spills as the appends do
    assert many.spilled == one.spilled > 0 and len(many) == len(one) == 300
    assert np.concatenate(list(many.chunks())).tolist() == values


def test_in_memory_percentiles_are_numpys_to_the_sign_of_zero():
    """Below a chunk the percentiles are computed without numpy.percentile (whose first call
    imports numpy.ma): the same values, even which of -0.0 and 0.0 lands at an index, and NaN."""
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 257):
        for data in (rng.random(n), np.where(rng.random(n) < 0.5, -0.0, 0.0), rng.integers(-2, 3, n) * 0.5):
            got = _filled(data, 1 << 18).percentiles(PS + (12.5, 87.5))
            want = [float(np.percentile(data, p)) for p in PS + (12.5, 87.5)]
            assert [(g, np.copysign(1.0, g)) for g in got] == [(w, np.copysign(1.0, w)) for w in want]
    with_nan = _filled(np.array([1.0, np.nan, 2.0]), 1 << 18).percentiles([0, 50])
    assert all(np.isnan(v) for v in with_nan)
    with pytest.raises(ValueError, match="range"):
        _filled(np.array([1.0]), 1 << 18).percentiles([101])


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@pytest.mark.parametrize("seed", range(4))
def test_a_short_windows_quantile_equals_numpys_bit_for_bit(seed):
    """`short_quantile` and `short_percentile` (what the SLO planner's forecast band and
    `RecentLatencies.percentile` answer at every control tick) are numpy's linear method exactly: ties, one
    and two values, negative values, zeros of one sign and of both, NaN and infinities, and windows longer
    than they sort themselves (numpy's own path)."""
    rng = random.Random(seed)
    for _ in range(4000):
        n = rng.choice([1, 2, 3, 4, 5, 9, 20, 61, 200, 512, 513, 900])
        kind = rng.randrange(6)
        if kind == 0:  # ties: a few distinct latencies
            values = [rng.choice([0.05, 0.25, 1.5, 2.0]) for _ in range(n)]
        elif kind == 1:  # integer-valued, negative and zero too
            values = [float(rng.randint(-3, 3)) for _ in range(n)]
        elif kind == 2:  # zeros of both signs, NaN, infinities
            values = [rng.choice([0.0, -0.0, 1.0, 2.5, math.nan, math.inf, -math.inf]) for _ in range(n)]
        elif kind == 3:  # zeros of one sign among others (an idle forecaster's errors)
            zero = rng.choice([0.0, -0.0])
            values = [rng.choice([zero, zero, 0.5, -1.25]) for _ in range(n)]
        else:  # heavy-tailed, either sign
            values = [rng.lognormvariate(0.0, 2.0) * rng.choice([1.0, -1.0]) for _ in range(n)]
        p = rng.choice([0, 50, 90, 99, 100, 12.5, rng.uniform(0.0, 100.0)])
        q = rng.choice([0.0, 0.5, 0.9, 0.95, 1.0, rng.random()])
        with np.errstate(all="ignore"):  # inf - inf in numpy's interpolation
            expected = float(np.percentile(np.asarray(values, dtype=float), p)), float(np.quantile(values, q))
            got = short_percentile(values, p), short_quantile(values, q)
        assert [_bits(x) for x in got] == [_bits(x) for x in expected], (values, p, q)


def test_a_short_windows_quantile_out_of_range_is_numpys_error():
    with pytest.raises(ValueError, match="Percentiles must be in the range"):
        short_percentile([1.0, 2.0], 101)
    with pytest.raises(ValueError, match="Quantiles must be in the range"):
        short_quantile([1.0, 2.0], -0.1)
