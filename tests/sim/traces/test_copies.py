"""Where a replicated request's copies arrive (`sim.traces.copies`), through ``scale_rate`` and ``rate_profile``:
clumped (the default), shuffled within blocks, shifted as whole streams."""

import numpy as np
import pytest

from sim.traces import apply_transforms, bundled_trace_path, rate_profile, read_trace, repeat, scale_rate
from sim.traces.record import TraceRequest


def _reqs(times):
    return [TraceRequest(str(i), float(t), 10 + i, 1) for i, t in enumerate(times)]


def test_scale_rate_shuffled_copies_keep_the_slots_and_each_request_s_count():
    reqs = list(read_trace(bundled_trace_path()))[:1000]
    clumped = list(scale_rate(reqs, 3.4, np.random.default_rng(4)))
    shuffled = list(scale_rate(reqs, 3.4, np.random.default_rng(4), copies="shuffled"))
    assert shuffled == list(scale_rate(reqs, 3.4, np.random.default_rng(4), copies="shuffled"))  # seeded
    # the same arrival slots, draw for draw, and the originals in them unchanged
    assert [r.arrival_s for r in shuffled] == [r.arrival_s for r in clumped]
    assert [r for r in shuffled if ".r" not in r.request_id] == [r for r in clumped if ".r" not in r.request_id]
    # each request copied as many times, its copies numbered .r1, .r2, ... and carrying its lengths
    assert sorted(r.request_id for r in shuffled) == sorted(r.request_id for r in clumped)
    by_id = {r.request_id: r for r in reqs}
    for c in shuffled:
        donor = by_id[c.request_id.split(".r")[0]]
        assert (c.prompt_tokens, c.output_tokens) == (donor.prompt_tokens, donor.output_tokens)
    # ...but spread over its block: most copies leave the gap after their request
    order = {r.request_id: i for i, r in enumerate(reqs)}
    owner = []  # the input request whose gap each output slot is in
    for r in clumped:
        owner.append(order[r.request_id.split(".r")[0]])
    moved = [order[c.request_id.split(".r")[0]] != owner[i] for i, c in enumerate(shuffled) if ".r" in c.request_id]
    assert sum(moved) > 0.9 * len(moved)
    # never outside its block of 64 consecutive input requests
    for i, c in enumerate(shuffled):
        if ".r" in c.request_id:
            assert order[c.request_id.split(".r")[0]] // 64 == owner[i] // 64


def test_shuffled_copies_break_up_one_long_prompt_s_burst():
    # one long prompt among short ones, at x8: clumped, its 7 copies arrive in its own gap
    reqs = [TraceRequest(str(i), float(i), 8000 if i == 10 else 100, 10) for i in range(64)]
    for copies, most in (("clumped", 8), ("shuffled", 3)):
        out = list(scale_rate(reqs, 8, np.random.default_rng(0), copies=copies))
        per_second = [sum(r.prompt_tokens == 8000 and s <= r.arrival_s < s + 1 for r in out) for s in range(64)]
        assert sum(per_second) == 8
        assert max(per_second) <= most, (copies, per_second)
    assert max(per_second) < 8


def test_rate_profile_takes_copies_and_a_bad_placement_is_named():
    reqs = _reqs(range(200))
    out = list(rate_profile(reqs, [(0, 1), (199, 5)], np.random.default_rng(2), copies="shuffled"))
    flat = list(rate_profile(reqs, [(0, 1), (199, 5)], np.random.default_rng(2)))
    assert [r.arrival_s for r in out] == [r.arrival_s for r in flat]
    assert sorted(r.request_id for r in out) == sorted(r.request_id for r in flat)
    assert [r.request_id for r in out] != [r.request_id for r in flat]
    for call in (lambda: scale_rate([], 2, np.random.default_rng(0), copies="spread"),
                 lambda: rate_profile([], [(0, 2)], np.random.default_rng(0), copies=None),
                 lambda: apply_transforms([], rate_scale=2, rng=np.random.default_rng(0), copies="x")):
        with pytest.raises(ValueError, match="^copies must be 'clumped', 'shuffled' or 'shifted', got"):
            call()
    assert list(apply_transforms(reqs, rate_scale=2, rng=np.random.default_rng(0), copies="shuffled")) == list(
        scale_rate(reqs, 2, np.random.default_rng(0), copies="shuffled"))


def _stream(r):
    """(input id, copy number: 0 for the request itself) of an output request."""
    stem, _, n = r.request_id.partition(".r")
    return stem, int(n or 0)


@pytest.mark.parametrize("factor", [3, 2.4, 0.6])
def test_shifted_copies_keep_the_counts_and_each_window_s_count(factor):
    reqs = list(read_trace(bundled_trace_path()))
    shifted = list(scale_rate(reqs, factor, np.random.default_rng(5), copies="shifted"))
    clumped = list(scale_rate(reqs, factor, np.random.default_rng(5)))
    times = [r.arrival_s for r in shifted]
    assert times == sorted(times)
    # the same requests copied as many times (the counts are drawn as clumped's, draw for draw)
    assert sorted(r.request_id for r in shifted) == sorted(r.request_id for r in clumped)
    # each copy is its input request again, only later or earlier in its window
    by_id = {r.request_id: r for r in reqs}
    for r in shifted:
        donor = by_id[_stream(r)[0]]
        assert (r.prompt_tokens, r.output_tokens) == (donor.prompt_tokens, donor.output_tokens)
        assert r.arrival_s // 600 == donor.arrival_s // 600
    # every 600-s window keeps the count its requests were given
    for w in range(7):
        assert sum(t // 600 == w for t in times) == sum(
            1 for r in clumped if by_id[_stream(r)[0]].arrival_s // 600 == w)
    if factor < 1:
        assert shifted == clumped  # thinning makes no copies: nothing to place


def test_shifted_copies_are_the_trace_s_own_stream_rotated_in_each_window():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(2.0, 1500))  # ~50 min, five windows
    reqs = _reqs(times)
    out = list(scale_rate(reqs, 4, np.random.default_rng(1), copies="shifted"))
    by_id = {r.request_id: r for r in reqs}
    last = reqs[-1].arrival_s
    shifts: dict[tuple[int, int], set] = {}
    for r in out:
        stem, n = _stream(r)
        a = by_id[stem].arrival_s
        w = int(a // 600)
        lo = reqs[0].arrival_s if w == 0 else w * 600.0
        hi = last if w == int(last // 600) else (w + 1) * 600.0
        assert lo <= r.arrival_s < hi or r.arrival_s == a
        if n:
            shifts.setdefault((w, n), set()).add(round((r.arrival_s - a) % (hi - lo), 6) % round(hi - lo, 6))
    # within a window, a stream is moved by one offset (modulo the window): its gaps are the trace's own
    assert all(len(s) == 1 for s in shifts.values()), {k: v for k, v in shifts.items() if len(v) > 1}
    # and the streams' offsets differ
    assert len({next(iter(s)) for s in shifts.values()}) == len(shifts)


def test_shifted_copies_do_not_stack_a_burst():
    # a burst of 10 requests within one second in a quiet hour, at x8: clumped or shuffled, 80 arrive within
    # seconds; shifted, each stream has the burst at its own time
    times = sorted([float(t) for t in range(0, 3600, 20)] + [1000 + 0.1 * i for i in range(10)])
    reqs = _reqs(times)
    for copies in ("clumped", "shuffled", "shifted"):
        out = list(scale_rate(reqs, 8, np.random.default_rng(0), copies=copies))
        busiest = max(np.bincount(np.array([r.arrival_s for r in out]).astype(int) // 5))
        if copies == "shifted":
            assert busiest <= 30, busiest
        else:
            assert busiest >= 70, (copies, busiest)


def test_shifted_copies_stay_within_the_trace_s_span():
    reqs = _reqs([1000.5 + 7 * i for i in range(300)])  # not from time 0, not ending on a window's edge
    out = list(scale_rate(reqs, 3, np.random.default_rng(0), copies="shifted"))
    assert len(out) == 900
    assert min(r.arrival_s for r in out) >= 1000.5 and max(r.arrival_s for r in out) <= reqs[-1].arrival_s
    one = list(scale_rate(_reqs([5.0]), 3, np.random.default_rng(0), copies="shifted"))  # a single request
    assert [(r.request_id, r.arrival_s) for r in one] == [("0", 5.0), ("0.r1", 5.0), ("0.r2", 5.0)]
    assert list(scale_rate([], 3, np.random.default_rng(0), copies="shifted")) == []
    assert list(apply_transforms(reqs, rate_scale=3, rng=np.random.default_rng(0), copies="shifted")) == out


def test_the_busiest_seconds_docs_traces_md_gives_are_the_bundled_hour_s():
    # docs/traces.md quotes the busiest second of the bundled hour at x10, clumped, shuffled and shifted (seed 0)
    import math
    import re
    from collections import Counter
    from pathlib import Path

    from sim.replay import TraceTransforms, prepare_trace

    text = " ".join((Path(__file__).parents[3] / "docs" / "traces.md").read_text().split())
    quoted = re.search(r"the busiest second has (\d+) requests clumped or shuffled and (\d+) shifted \(its busiest "
                       r"second at x1 has (\d+)", text)
    assert quoted, "the sentence of docs/traces.md this test checks is gone"

    def busiest(**transforms) -> int:
        per_second = Counter(math.floor(r.arrival_s) for r in prepare_trace(
            bundled_trace_path(), seed=0, transforms=TraceTransforms(**transforms), trace_format="azure"))
        return max(per_second.values())

    clumped, shuffled = busiest(rate_scale=10), busiest(rate_scale=10, copies="shuffled")
    assert clumped == shuffled
    assert tuple(map(int, quoted.groups())) == (clumped, busiest(rate_scale=10, copies="shifted"), busiest())


_CLASHING_IDS = ["a", "a.r1", "b", "a.c1", "a.r1.r0", "c.r01", "d.c0", "a.c1.r1"]


@pytest.mark.parametrize("copies", ["clumped", "shuffled", "shifted"])
@pytest.mark.parametrize("edits", [{"rate_scale": 3.0}, {"repeat": 3}, {"repeat": 2, "rate_scale": 2.5},
                                   {"rate_profile": [(0, 1), (10, 4)]}])
def test_copies_never_take_an_id_of_the_trace(copies, edits):
    """A trace's own ids that end like copies' (``a.r1``, ``a.c1``) must not be taken by a copy:
    a run refuses the second row of an id, and the request would be lost to the database."""
    reqs = [TraceRequest(rid, float(i), 10, 2) for i, rid in enumerate(_CLASHING_IDS)]
    out = list(apply_transforms(reqs, rng=np.random.default_rng(0), copies=copies, **edits))
    ids = [r.request_id for r in out]
    assert len(ids) == len(set(ids)) and len(ids) > len(reqs)


def test_only_ids_that_could_be_taken_move_and_only_when_copies_are_made():
    reqs = [TraceRequest(rid, float(i), 10, 2) for i, rid in enumerate(_CLASHING_IDS)]
    doubled = [r.request_id for r in scale_rate(reqs, 2.0, np.random.default_rng(0))]
    assert doubled[:4] == ["a", "a.r1", "a.r1.r0", "a.r1.r0.r1"]  # `a`'s copy keeps the name copies have
    assert "a.c1" in doubled and "d.c0" in doubled  # (a repeat's endings: not a rate change's)
    thinned = [r.request_id for r in scale_rate(reqs, 0.999, np.random.default_rng(0))]
    assert set(thinned) <= set(_CLASHING_IDS)  # no copy: every id as the trace has it
    assert [r.request_id for r in repeat(lambda: reqs, 1)] == _CLASHING_IDS
