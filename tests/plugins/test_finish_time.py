"""The finish-time prediction behind queue-limit's max_finish_s: iteration times per batch size."""

from __future__ import annotations

from collections import deque

from controlplane.testing import make_requests, make_worker
from controlplane.types import RequestStatus
from plugins.finish_time import SAMPLE_MAX_S, FinishTimes
from plugins.output_lengths import OutputLengths


def _running(n: int, tokens: int = 0, max_tokens: int = 100):
    rs = make_requests(n, prefix="run", model="default")
    for r in rs:
        r.output_tokens, r.max_output_tokens, r.scheduled_s = tokens, max_tokens, 0.0
    return rs


def _timed(ft: FinishTimes, w, iteration_s: float, iterations: int = 10, at: float = 0.0) -> float:
    """Two looks at ``w`` with ``iterations`` iterations of ``iteration_s`` between them."""
    ft.look(w, at)
    for r in w.running:
        r.output_tokens += iterations
    ft.look(w, at + iterations * iteration_s)
    return at + iterations * iteration_s


def test_an_iteration_is_timed_from_the_tokens_the_running_requests_made():
    ft = FinishTimes()
    w = make_worker(running=_running(8))
    _timed(ft, w, 0.05)
    assert abs(ft.iteration_s("default", 8) - 0.05) < 1e-9


def test_looks_too_close_or_too_far_apart_time_nothing():
    ft = FinishTimes()
    w = make_worker(running=_running(4))
    _timed(ft, w, 0.01, iterations=10)  # 0.1 s apart: under SAMPLE_S
    assert ft.iteration_s("default", 4) is None
    ft2 = FinishTimes()
    _timed(ft2, w, (SAMPLE_MAX_S + 1) / 10)  # the batch may have changed meanwhile
    assert ft2.iteration_s("default", 4) is None


def test_other_batch_sizes_bound_the_prediction():
    ft = FinishTimes()
    small = make_worker("default-0", running=_running(2))
    big = make_worker("default-1", running=_running(64))
    _timed(ft, small, 0.02, iterations=20)
    _timed(ft, big, 0.08)
    assert abs(ft.iteration_s("default", 2) - 0.02) < 1e-9
    assert abs(ft.iteration_s("default", 8) - 0.08) < 1e-9  # min(0.02 x 8/2, 0.08)
    assert abs(ft.iteration_s("default", 3) - 0.04) < 1e-9  # 0.02 x 4/2 (bucket 4)
    assert abs(ft.iteration_s("default", 128) - 0.16) < 1e-9  # above every size seen: in proportion
    assert ft.iteration_s("other", 2) is None


def test_a_stale_slow_time_at_a_larger_size_does_not_shut_out_a_smaller_batch():
    ft = FinishTimes()
    _timed(ft, make_worker("default-0", running=_running(128)), 1.5, iterations=1)
    _timed(ft, make_worker("default-1", running=_running(1)), 0.06)
    assert abs(ft.iteration_s("default", 2) - 0.12) < 1e-9  # not 1.5: a smaller batch is bounded from below


def test_the_prediction_spreads_the_work_ahead_over_the_batch_slots():
    ft = FinishTimes()
    w = make_worker(running=_running(4, tokens=50), max_num_seqs=4)
    now = _timed(ft, w, 0.1)  # 60 of 100 tokens made now
    w.waiting = deque(_running(2, max_tokens=100))  # 2 x 100 tokens queued beyond the full batch
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 10
    p = ft.predict([w], new, now + 0.01)[0]
    assert p.waits and not p.idle
    # ahead: 4 x 40 running + 2 x 100 waiting = 360 tokens over 4 slots at 0.1 s; then its own 10
    assert abs(p.finish_s - (0.1 * 360 / 4 + 0.1 * 10)) < 1e-6


def test_no_time_yet_and_idle_replicas_are_marked():
    ft = FinishTimes()
    new = make_requests(1, prefix="new", model="default")[0]
    idle = make_worker()
    p = ft.predict([idle], new, 0.0)[0]
    assert p.finish_s is None and p.idle and not p.waits
    full = make_worker(running=_running(2), max_num_seqs=2)
    p = ft.predict([full], new, 0.0)[0]
    assert p.finish_s is None and p.waits and not p.idle


def _finished_answers(ft: FinishTimes, n: int, tokens: int) -> None:
    for r in make_requests(n, prefix=f"done{tokens}-", model="default"):
        r.status, r.output_tokens, r.max_output_tokens = RequestStatus.COMPLETED, tokens, 4096
        ft.lengths.finished(r)


def test_the_work_ahead_and_the_new_request_count_the_answers_expected_not_max_tokens():
    ft = FinishTimes(OutputLengths(window=50, quantile=0.9, min_finished=20))
    w = make_worker(running=_running(4, tokens=50, max_tokens=4096), max_num_seqs=4)
    now = _timed(ft, w, 0.1)  # 60 tokens made each
    w.waiting = deque(_running(2, max_tokens=4096))
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 4096
    cold = ft.predict([w], new, now + 0.01)[0]  # fewer than 20 answers: max_tokens, as before
    assert cold.tokens == 4096
    assert abs(cold.finish_s - (0.1 * (4 * 4036 + 2 * 4096) / 4 + 0.1 * 4096)) < 1e-6
    _finished_answers(ft, 20, 100)
    p = ft.predict([w], new, now + 0.01)[0]
    # ahead: 4 running x 40 still expected + 2 waiting x 100 = 360 tokens over 4 slots; then 100
    assert p.tokens == 100 and p.waits
    assert abs(p.finish_s - (0.1 * 360 / 4 + 0.1 * 100)) < 1e-6
