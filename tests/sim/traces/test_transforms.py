import math

import numpy as np
import pytest

from sim.traces import (TraceRequest, apply_transforms, bundled_trace_path, limit, rate_profile, read_trace, repeat,
                        scale_rate, speed_up, time_window)


def _reqs(times):
    return [TraceRequest(str(i), float(t), 10 + i, 1) for i, t in enumerate(times)]


class _Guarded:
    """Iterator that fails if read past `allowed` items: proves transforms stop early."""

    def __init__(self, items, allowed):
        self.items, self.allowed, self.read = list(items), allowed, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.read >= len(self.items):
            raise StopIteration
        if self.read >= self.allowed:
            raise AssertionError("read past the needed requests")
        self.read += 1
        return self.items[self.read - 1]


def test_time_window():
    reqs = _reqs([0, 1, 2, 3, 4, 5])
    assert [r.arrival_s for r in time_window(reqs, 1.5, 4.0)] == [0.5, 1.5]
    assert [r.arrival_s for r in time_window(reqs, 1.5, 4.0, rebase=False)] == [2.0, 3.0]
    assert [r.request_id for r in time_window(reqs, end_s=2)] == ["0", "1"]
    assert [r.request_id for r in time_window(reqs, start_s=4)] == ["4", "5"]
    assert list(time_window(_Guarded(reqs, 4), 0, 3.0))[-1].request_id == "2"  # reads one past the end only


@pytest.mark.parametrize("start, end", [(3, 3), (4, 1), (float("nan"), None), (None, float("inf")), ("1", None)])
def test_time_window_validation(start, end):
    with pytest.raises(ValueError):
        time_window([], start, end)


def test_speed_up():
    out = list(speed_up(_reqs([0, 1, 3]), 2.0))
    assert [r.arrival_s for r in out] == [0.0, 0.5, 1.5]
    assert [r.prompt_tokens for r in out] == [10, 11, 12]
    for bad in (0, -1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="^speed_up must be a finite number > 0"):
            speed_up([], bad)


def test_scale_rate_thinning_on_real_trace():
    reqs = list(read_trace(bundled_trace_path()))
    a = list(scale_rate(reqs, 0.5, np.random.default_rng(1)))
    b = list(scale_rate(reqs, 0.5, np.random.default_rng(1)))
    assert a == b
    n = len(reqs)
    assert abs(len(a) - n / 2) < 4 * math.sqrt(n * 0.25)  # binomial, 4 sigma
    assert set(r.request_id for r in a) <= set(r.request_id for r in reqs)
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))


@pytest.mark.parametrize("factor", [2.0, 3.0])
def test_scale_rate_integer_replication(factor):
    reqs = _reqs([0, 1, 1, 4, 10])
    out = list(scale_rate(reqs, factor, np.random.default_rng(5)))
    k = int(factor)
    assert len(out) == k * len(reqs)
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(out, out[1:]))
    for i, r in enumerate(reqs):
        group = out[i * k:(i + 1) * k]
        assert group[0] is r
        assert [c.request_id for c in group[1:]] == [f"{r.request_id}.r{j}" for j in range(1, k)]
        nxt = reqs[i + 1].arrival_s if i + 1 < len(reqs) else r.arrival_s
        assert all(r.arrival_s <= c.arrival_s <= nxt for c in group[1:])
        assert all(c.prompt_tokens == r.prompt_tokens for c in group)


def test_scale_rate_fractional_and_jitter_cap():
    reqs = list(read_trace(bundled_trace_path()))
    out = list(scale_rate(reqs, 2.5, np.random.default_rng(2), max_jitter_s=0.01))
    n = len(reqs)
    assert abs(len(out) - 2.5 * n) < 4 * math.sqrt(n * 0.25)
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(out, out[1:]))
    origin = {r.request_id: r.arrival_s for r in reqs}
    for c in out:
        base = c.request_id.split(".r")[0]
        assert 0.0 <= c.arrival_s - origin[base] <= 0.01
    assert len({r.request_id for r in out}) == len(out)


def test_scale_rate_validation():
    with pytest.raises(ValueError, match="^rate_scale must be"):
        scale_rate([], 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        scale_rate([], 2.0, None)  # type: ignore[arg-type]
    assert list(scale_rate(_reqs([0, 1]), 1.0, np.random.default_rng(0))) == _reqs([0, 1])


def test_rate_profile_follows_the_factor_in_time_on_the_real_trace():
    reqs = list(read_trace(bundled_trace_path()))  # one hour; its rate is not flat, so compare with the input
    points = [(0.0, 0.25), (1800.0, 2.5), (3600.0, 0.25)]  # a ramp up then down
    out = list(rate_profile(reqs, points, np.random.default_rng(3)))
    assert out == list(rate_profile(reqs, points, np.random.default_rng(3)))  # seeded
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(out, out[1:]))
    assert len({r.request_id for r in out}) == len(out)
    factor = lambda t: 0.25 + 2.25 * (1 - abs(t - 1800) / 1800)  # noqa: E731
    for lo, hi in ((0, 600), (1500, 2100), (3000, 3600)):  # each window's count against the factors' sum
        expected = sum(factor(r.arrival_s) for r in reqs if lo <= r.arrival_s < hi)
        n_out = sum(lo <= r.arrival_s < hi for r in out)  # (a copy lands before its next input request)
        assert abs(n_out - expected) < 4 * math.sqrt(expected / 4) + 3, (lo, expected, n_out)
    kept = lambda lo, hi: (sum(lo <= r.arrival_s < hi for r in out)  # noqa: E731
                           / sum(lo <= r.arrival_s < hi for r in reqs))
    assert kept(0, 300) < 0.7 < 2.0 < kept(1700, 1900)  # the ends thinned (factor 0.25-0.63), the middle replicated


def test_rate_profile_ends_interpolation_and_zero():
    reqs = _reqs([0, 5, 10, 15, 20, 25, 30])
    # constant before the first point and after the last; 0 drops; 2 replicates; 1 keeps
    out = list(rate_profile(reqs, [(6, 0), (14, 0), (16, 2), (24, 2), (25, 1)], np.random.default_rng(0)))
    assert [r.request_id for r in out] == ["3", "4", "4.r1", "5", "6"]  # 15 s: half way from 0 to 2
    assert [r.request_id for r in rate_profile(reqs, [(100, 2)], np.random.default_rng(0))][:2] == ["0", "0.r1"]
    # between points the factor is linear: half way between 0 and 2 each request is kept once and copied with p 0
    mid = list(rate_profile(_reqs([10] * 400), [(0, 0.0), (20, 2.0)], np.random.default_rng(1)))
    assert len(mid) == 400 and not any(".r" in r.request_id for r in mid)
    # the same profile as a single factor is scale_rate, draw for draw
    flat = list(rate_profile(reqs, [(0, 2.5)], np.random.default_rng(7), max_jitter_s=0.5))
    assert flat == list(scale_rate(reqs, 2.5, np.random.default_rng(7), max_jitter_s=0.5))


@pytest.mark.parametrize("points, match", [
    ([], "non-empty list"), ("01", "non-empty list"), (None, "non-empty list"),
    ([(0, 1, 2)], "point 0 must be a"), ([5], "point 0 must be a"),
    ([(0, 1), (float("nan"), 1)], "point 1: time_s must be a finite"), ([("0", 1)], "point 0: time_s"),
    ([(0, -1)], "point 0: factor must be a finite number >= 0"), ([(0, float("inf"))], "point 0: factor"),
    ([(0, True)], "point 0: factor"), ([(0, 1), (0, 2)], "point 1: its time, 0 s, must be later"),
    ([(5, 1), (2, 2)], "point 1: its time, 2 s, must be later"),
])
def test_rate_profile_validation(points, match):
    with pytest.raises(ValueError, match=match):
        rate_profile([], points, np.random.default_rng(0))


def test_rate_profile_validation_rng_and_jitter():
    with pytest.raises(ValueError, match="rng"):
        rate_profile([], [(0, 1)], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_jitter_s"):
        rate_profile([], [(0, 1)], np.random.default_rng(0), max_jitter_s=0)


def test_limit():
    assert [r.request_id for r in limit(_reqs(range(5)), 2)] == ["0", "1"]
    assert list(limit(_reqs(range(5)), 0)) == []
    assert len(list(limit(_Guarded(_reqs(range(100)), 3), 3))) == 3
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match="limit must be an integer"):
            limit([], bad)  # type: ignore[arg-type]


def test_apply_transforms_order_and_validation():
    reqs = _reqs(range(0, 100))  # one request per second
    out = list(apply_transforms(reqs, window=(10, 30), speed_up=2.0, rate_scale=3.0, limit=7,
                                rng=np.random.default_rng(0)))
    assert len(out) == 7
    assert out[0].request_id == "10" and out[0].arrival_s == 0.0
    assert [r.request_id for r in out[:4]] == ["10", "10.r1", "10.r2", "11"]
    assert out[3].arrival_s == 0.5
    same = list(apply_transforms(reqs, window={"start_s": 10, "end_s": 30, "rebase": False}))
    assert [r.arrival_s for r in same] == [float(t) for t in range(10, 30)]
    assert list(apply_transforms(iter(reqs))) == reqs
    with pytest.raises(ValueError, match="rng"):
        apply_transforms(reqs, rate_scale=2.0)
    with pytest.raises(ValueError, match="unknown window key"):
        apply_transforms(reqs, window={"begin": 1})
    with pytest.raises(ValueError, match="window must be"):
        apply_transforms(reqs, window=5)  # type: ignore[arg-type]


def test_repeat_plays_copies_back_to_back_one_mean_gap_apart():
    reqs = _reqs([5.0, 6.0, 9.0])  # span 4 s, mean gap 2 s
    opened = []

    def open_copy():
        opened.append(1)
        return iter(reqs)

    out = list(repeat(open_copy, 3))
    assert len(opened) == 3  # the trace is read once per copy, never held
    assert [r.request_id for r in out] == ["0", "1", "2", "0.c1", "1.c1", "2.c1", "0.c2", "1.c2", "2.c2"]
    assert [r.arrival_s for r in out] == [5.0, 6.0, 9.0, 11.0, 12.0, 15.0, 17.0, 18.0, 21.0]
    assert out[3].prompt_tokens == reqs[0].prompt_tokens
    assert list(repeat(open_copy, 1)) == reqs
    assert list(repeat(lambda: iter(()), 4)) == []
    single = list(repeat(lambda: iter(_reqs([3.0])), 2))
    assert [(r.request_id, r.arrival_s) for r in single] == [("0", 3.0), ("0.c1", 3.0)]


def test_repeat_validation():
    with pytest.raises(ValueError, match="repeat must be an integer >= 1"):
        repeat(lambda: [], 0)
    with pytest.raises(ValueError, match="repeat must be an integer >= 1"):
        repeat(lambda: [], 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="opens the trace again"):
        repeat(_reqs([1.0]), 2)  # type: ignore[arg-type]


def test_apply_transforms_repeat_after_window_and_speed_up_before_rate_scale():
    reqs = _reqs(range(0, 100))
    out = list(apply_transforms(reqs, window=(10, 14), speed_up=2.0, repeat=2))  # 0, 0.5, 1, 1.5 then again
    assert [r.arrival_s for r in out] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert out[4].request_id == "10.c1"
    scaled = list(apply_transforms(reqs, window=(10, 14), repeat=2, rate_scale=2.0, rng=np.random.default_rng(0)))
    assert len(scaled) == 16 and scaled[8].request_id == "10.c1" and scaled[9].request_id == "10.c1.r1"
    assert [r.arrival_s for r in scaled] == sorted(r.arrival_s for r in scaled)
    with pytest.raises(ValueError, match="can be read again"):
        apply_transforms(iter(reqs), repeat=2)
    with pytest.raises(ValueError, match="window must be"):  # checked before anything is read
        apply_transforms(lambda: iter(reqs), window=5, repeat=2)  # type: ignore[arg-type]
    assert list(apply_transforms(lambda: iter(reqs), repeat=1)) == reqs


def test_repeat_of_the_bundled_trace_keeps_its_rate():
    path = bundled_trace_path()
    one = list(read_trace(path, "azure"))
    three = list(apply_transforms(lambda: read_trace(path, "azure"), repeat=3))
    assert len(three) == 3 * len(one)
    assert len({r.request_id for r in three}) == len(three)
    span = one[-1].arrival_s - one[0].arrival_s
    assert three[-1].arrival_s - three[0].arrival_s == pytest.approx(3 * span + 2 * span / (len(one) - 1))


def test_cap_lengths_cuts_prompts_and_outputs_and_what_a_cut_prompt_no_longer_holds():
    from sim.traces.transforms import cap_lengths

    reqs = [TraceRequest("a", 0.0, 1000, 70, prompt="x" * 1000, hash_ids=(1, 2, 3, 4), hash_block_tokens=256),
            TraceRequest("b", 1.0, 100, 5, prompt="short", hash_ids=(9,), hash_block_tokens=256)]
    a, b = cap_lengths(reqs, max_prompt_tokens=300, max_output_tokens=48)
    assert (a.prompt_tokens, a.output_tokens, a.prompt, a.hash_ids) == (300, 48, None, (1, 2))  # 300 tokens: 2 blocks
    assert b is reqs[1]  # within both caps: untouched
    assert [r.output_tokens for r in cap_lengths(reqs, max_output_tokens=10)] == [10, 5]
    with pytest.raises(ValueError, match="max_prompt_tokens must be an integer >= 1"):
        cap_lengths(reqs, max_prompt_tokens=0)


def test_apply_transforms_caps_last():
    reqs = [TraceRequest(str(i), float(i), 500 + i, 60) for i in range(5)]
    got = list(apply_transforms(reqs, limit=3, max_prompt_tokens=256, max_output_tokens=16))
    assert [(r.request_id, r.prompt_tokens, r.output_tokens) for r in got] == [("0", 256, 16), ("1", 256, 16),
                                                                              ("2", 256, 16)]


def test_apply_transforms_rate_profile_in_the_replays_time_after_window_speed_up_and_repeat():
    reqs = _reqs(range(0, 100))  # one request per second
    # the window (10, 20) rebased and sped up x2 is 0..4.5 s; repeated twice, 0..9.5 s; the profile drops the
    # first copy (factor 0 up to 5 s, in these seconds, not the trace's) and doubles the second (2 from 5 s on)
    out = list(apply_transforms(lambda: iter(reqs), window=(10, 20), speed_up=2.0, repeat=2,
                                rate_profile=[(4.9, 0), (5.0, 2)], rng=np.random.default_rng(0)))
    assert [r.request_id for r in out[:4]] == ["10.c1", "10.c1.r1", "11.c1", "11.c1.r1"]
    assert len(out) == 20 and all(r.arrival_s >= 5.0 for r in out)
    # limit counts after the rate change; the rng is needed, and a bad profile is named before anything is read
    assert len(list(apply_transforms(reqs, rate_profile=[(0, 3)], limit=7, rng=np.random.default_rng(0)))) == 7
    with pytest.raises(ValueError, match="rng"):
        apply_transforms(reqs, rate_profile=[(0, 2)])
    with pytest.raises(ValueError, match="rate_profile point 1: its time, 0 s, must be later"):
        apply_transforms(_Guarded(reqs, 0), rate_profile=[(0, 1), (0, 2)], rng=np.random.default_rng(0))


def test_apply_transforms_rate_scale_times_the_profile_in_one_pass():
    reqs = list(read_trace(bundled_trace_path()))[:2000]
    both = list(apply_transforms(reqs, rate_scale=0.5, rate_profile=[(0, 1), (600, 3)], rng=np.random.default_rng(4)))
    assert both == list(rate_profile(reqs, [(0, 0.5), (600, 1.5)], np.random.default_rng(4)))
    # a one-point profile with a scale is scale_rate of their product, draw for draw
    flat = list(apply_transforms(reqs, rate_scale=1.5, rate_profile=[(0, 2)], rng=np.random.default_rng(4)))
    assert flat == list(scale_rate(reqs, 3.0, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="^rate_scale must be a finite number > 0"):
        apply_transforms(reqs, rate_scale=0, rate_profile=[(0, 2)], rng=np.random.default_rng(4))


def test_a_bad_argument_is_named_by_its_keyword_or_by_the_names_a_caller_gives():
    from sim.traces.transforms import TransformValueError

    cases = ((dict(speed_up=0), "speed_up must be a finite number > 0, got 0"),
             (dict(rate_scale=-1.5, rng=np.random.default_rng(0)), "rate_scale must be a finite number > 0, got -1.5"),
             (dict(window=(5.0, 2.0)), "end_s (2.0) must be greater than start_s (5.0)"),
             (dict(window={"end_s": math.nan}), "end_s must be a finite number of seconds >= 0, got nan"),
             (dict(window=(-100.0, None)), "start_s must be a finite number of seconds >= 0, got -100.0"),
             (dict(repeat=0), "repeat must be an integer >= 1, got 0"),
             (dict(limit=-1), "limit must be an integer >= 0, got -1"),
             (dict(max_output_tokens=0), "max_output_tokens must be an integer >= 1 or None, got 0"))
    for kwargs, message in cases:
        with pytest.raises(TransformValueError) as caught:
            list(apply_transforms(lambda: iter(_reqs([0, 1])), **kwargs))
        assert str(caught.value) == message
    caught.value.values = ({"a": "{b}"},)  # a value's braces are shown, not read as fields
    assert caught.value.named({"max_output_tokens": "--cap"}) == (
        "--cap must be an integer >= 1 or None, got {'a': '{b}'}")
    with pytest.raises(TransformValueError) as caught:
        time_window([], 5.0, 2.0)
    assert caught.value.named({"end_s": "--to"}) == "--to (2.0) must be greater than start_s (5.0)"


def test_scale_lengths_rounds_to_the_nearest_token_at_least_one_and_drops_what_a_scaled_prompt_no_longer_holds():
    from sim.traces import scale_lengths

    reqs = [TraceRequest("a", 0.0, 1000, 70, prompt="x" * 1000, hash_ids=(1, 2), hash_block_tokens=512),
            TraceRequest("b", 1.0, 3, 5, prompt="abc", hash_ids=(9,), hash_block_tokens=512)]
    a, b = scale_lengths(reqs, prompt_scale=0.0125, output_scale=0.1)
    assert (a.prompt_tokens, a.output_tokens) == (12, 7)  # 12.5 -> 12 (halves to even, as round), 7.0
    assert (b.prompt_tokens, b.output_tokens) == (1, 1)  # 0.0375 and 0.5: at least one token
    # a scaled prompt is no longer the text, nor the trace's blocks of 512 tokens
    assert (a.prompt, a.hash_ids, a.hash_block_tokens) == (None, (), None)
    assert a.arrival_s == 0.0 and a.request_id == "a"
    # outputs alone: the prompt, its text and its blocks are kept; a request left as it was is the same record
    c, d = scale_lengths(reqs, output_scale=2)
    assert (c.prompt_tokens, c.output_tokens, c.prompt, c.hash_ids, c.hash_block_tokens) == (1000, 140, "x" * 1000,
                                                                                               (1, 2), 512)
    assert d.output_tokens == 10
    assert list(scale_lengths(reqs, prompt_scale=1.0, output_scale=1.0)) == reqs
    assert [r.prompt_tokens for r in scale_lengths(reqs, prompt_scale=2.5)] == [2500, 8]  # 7.5 -> 8 (to even)


@pytest.mark.parametrize("value", [0, -1, 0.0, float("nan"), float("inf"), True, "2"])
def test_scale_lengths_refuses_a_scale_that_is_not_a_finite_number_above_zero_naming_it(value):
    from sim.traces import scale_lengths
    from sim.traces.transforms import TransformValueError

    for name in ("prompt_scale", "output_scale"):
        with pytest.raises(TransformValueError, match=f"^{name} must be a finite number > 0, got "):
            scale_lengths([], **{name: value})
        with pytest.raises(TransformValueError, match=f"^{name} must be a finite number > 0"):
            apply_transforms(_Guarded(_reqs(range(3)), 0), **{name: value})  # before anything is read


def test_apply_transforms_scales_lengths_after_the_limit_and_before_the_caps():
    reqs = [TraceRequest(str(i), float(i), 1000 * (i + 1), 100 * (i + 1)) for i in range(5)]
    got = list(apply_transforms(reqs, limit=4, prompt_scale=0.1, output_scale=0.05, max_prompt_tokens=250,
                                max_output_tokens=15))
    # scaled first (100, 200, 300, 400 / 5, 10, 15, 20), then capped: only the longest are cut
    assert [(r.prompt_tokens, r.output_tokens) for r in got] == [(100, 5), (200, 10), (250, 15), (250, 15)]
