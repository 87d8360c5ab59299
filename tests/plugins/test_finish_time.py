"""The finish-time prediction behind queue-limit's max_finish_s: iteration times per batch size."""

from __future__ import annotations

from collections import deque

from controlplane.testing import make_requests, make_worker
from controlplane.types import RequestStatus
import pytest

from plugins.finish_time import HORIZON_S, SAMPLE_MAX_S, FinishTimes
from plugins.output_lengths import OutputLengths

from .kept_queues import overloaded_trace, replay_kept_and_walked


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
    now = _timed(ft, w, 0.05)
    assert abs(ft.iteration_s("default", 8, now) - 0.05) < 1e-9


def test_looks_too_close_or_too_far_apart_time_nothing():
    ft = FinishTimes()
    w = make_worker(running=_running(4))
    now = _timed(ft, w, 0.01, iterations=10)  # 0.1 s apart: under SAMPLE_S
    assert ft.iteration_s("default", 4, now) is None
    ft2 = FinishTimes()
    now = _timed(ft2, w, (SAMPLE_MAX_S + 1) / 10)  # the batch may have changed meanwhile
    assert ft2.iteration_s("default", 4, now) is None


def test_looks_at_every_iteration_start_keep_a_lone_requests_time_fresh():
    """Looks at each iteration's start (a live run's ``IterationTimed``): a sample every
    ``SAMPLE_S`` or so, so the time never goes stale however long nothing else happens."""
    ft = FinishTimes(horizon_s=10.0)
    (lone,) = w_running = _running(1, max_tokens=10**6)
    w = make_worker(running=w_running)
    updated = []
    for i in range(400):  # 40 s of 0.1 s iterations: four horizons
        ft.look(w, i * 0.1)
        lone.output_tokens += 1
        updated.append(ft._times.get("default", {}).get(1, (None, None))[1])
    stamps = sorted({u for u in updated if u is not None})
    assert stamps[0] == pytest.approx(0.3) and stamps[-1] >= 39.6
    assert max(b - a for a, b in zip(stamps, stamps[1:])) <= 0.3 + 1e-9  # every SAMPLE_S, one iteration late at most
    assert ft.iteration_s("default", 1, 40.0) == pytest.approx(0.1, rel=1e-9)


def test_other_batch_sizes_bound_the_prediction():
    ft = FinishTimes()
    small = make_worker("default-0", running=_running(2))
    big = make_worker("default-1", running=_running(64))
    _timed(ft, small, 0.02, iterations=20)
    now = _timed(ft, big, 0.08)
    assert abs(ft.iteration_s("default", 2, now) - 0.02) < 1e-9
    assert abs(ft.iteration_s("default", 8, now) - 0.08) < 1e-9  # min(0.02 x 8/2, 0.08)
    assert abs(ft.iteration_s("default", 3, now) - 0.04) < 1e-9  # 0.02 x 4/2 (bucket 4)
    # above every size seen: the line through 2 and 64, below 0.08 x 128/64 in proportion
    assert ft.iteration_s("default", 128, now) == pytest.approx(0.08 + 0.06 / 62 * 64, rel=1e-12)
    assert ft.iteration_s("other", 2, now) is None


def test_above_the_sizes_seen_the_line_between_them_is_held_from_flat_to_proportional():
    ft = FinishTimes()
    _timed(ft, make_worker("default-0", running=_running(1)), 0.010, iterations=40)
    now = _timed(ft, make_worker("default-1", running=_running(8)), 0.017, iterations=20)
    # the fixed cost measured: 1 ms more a request; not 0.017 x 16 = 0.272 s in proportion
    assert ft.iteration_s("default", 128, now) == pytest.approx(0.017 + 0.001 * 120, rel=1e-12)
    ft = FinishTimes()  # faster at 8 than at 1 (noise): no faster than flat
    _timed(ft, make_worker("default-0", running=_running(1)), 0.010, iterations=40)
    now = _timed(ft, make_worker("default-1", running=_running(8)), 0.008, iterations=40)
    assert ft.iteration_s("default", 64, now) == pytest.approx(0.008, rel=1e-12)
    ft = FinishTimes()  # slower than in proportion between 1 and 8: no slower than in proportion from 1
    _timed(ft, make_worker("default-0", running=_running(1)), 0.010, iterations=40)
    now = _timed(ft, make_worker("default-1", running=_running(8)), 0.160, iterations=5)
    assert ft.iteration_s("default", 64, now) == pytest.approx(0.010 * 64, rel=1e-12)  # (the line: 1.28)


def test_a_stale_slow_time_at_a_larger_size_does_not_shut_out_a_smaller_batch():
    ft = FinishTimes()
    _timed(ft, make_worker("default-0", running=_running(128)), 1.5, iterations=1)
    now = _timed(ft, make_worker("default-1", running=_running(1)), 0.06)
    assert abs(ft.iteration_s("default", 2, now) - 0.12) < 1e-9  # not 1.5: a smaller batch is bounded from below


def test_slow_times_learnt_at_large_sizes_are_forgotten_after_the_horizon_and_admit_again():
    """Lock-in: slow times at 64 and 128 (a cold start), then only small batches run, fast. While
    the slow times last they refuse a batch of 128 (nothing runs it to correct them); after
    ``HORIZON_S`` the fast small sizes predict it, and it is admitted again."""
    ft = FinishTimes()
    _timed(ft, make_worker("default-0", running=_running(64)), 0.300, iterations=1)
    _timed(ft, make_worker("default-1", running=_running(128)), 0.353, iterations=1)
    one = make_worker("default-2", running=_running(1))
    eight = make_worker("default-3", running=_running(8))
    big = make_worker("default-4", running=_running(100), max_num_seqs=128)  # joins a batch of 101: bucket 128
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 100
    now, finishes = 1.0, []
    while now < 2 * HORIZON_S:  # small fast batches only, each time timed again
        _timed(ft, one, 0.004, iterations=100, at=now)
        now = _timed(ft, eight, 0.006, iterations=100, at=now + 1.0) + 1.0
        p = ft.predict([big], new, now)[0]
        assert not p.waits
        finishes.append((now, p.finish_s))
    early = [f for t, f in finishes if t < HORIZON_S]
    late = [f for t, f in finishes if t > HORIZON_S + 3.0]
    # before: min(0.353 at 128, 0.006 x 16 in proportion from 8, the line 1..64, ...) x 100 = 9.6 s > 8 s
    assert all(f == pytest.approx(9.6, rel=1e-9) for f in early)
    # after: the line through 1 and 8 (2 ms more a request per 7): (0.006 + 0.002 / 7 x 120) x 100 = 4.03 s
    assert all(f == pytest.approx((0.006 + 0.002 / 7 * 120) * 100, rel=1e-9) for f in late)
    # all stale (idle past the horizon): the last known times still predict, not "never timed"
    assert ft.iteration_s("default", 128, now + 2 * HORIZON_S) == pytest.approx(0.006 + 0.002 / 7 * 120)


def test_after_an_idle_spell_past_the_horizon_the_last_known_time_predicts_until_a_fresh_one():
    """Idle for longer than the horizon, then a burst: forgetting every time made the model count as
    never timed and the burst was admitted blind to the free batch slots. The last known time stands
    until a fresh one is measured, which then retires it (a stale time never bounds a fresh one)."""
    ft = FinishTimes(horizon_s=10.0)
    now = _timed(ft, make_worker("default-0", running=_running(8)), 0.5, iterations=1)
    assert ft.iteration_s("default", 8, now + 70.0) == pytest.approx(0.5)
    later = _timed(ft, make_worker("default-1", running=_running(1)), 0.01, iterations=50, at=now + 70.0)
    assert ft.iteration_s("default", 8, later) == pytest.approx(0.08)  # from the fresh 1, not 0.5 at 8


def test_a_sample_after_the_horizon_replaces_the_stale_mean():
    ft = FinishTimes(horizon_s=10.0)
    w = make_worker(running=_running(8))
    _timed(ft, w, 0.5, iterations=1)
    now = _timed(ft, w, 0.01, iterations=50, at=20.0)
    assert ft.iteration_s("default", 8, now) == pytest.approx(0.01)  # not 0.7 x 0.5 + 0.3 x 0.01
    with pytest.raises(ValueError, match="horizon_s"):
        FinishTimes(horizon_s=0)


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


def test_where_the_kv_cache_holds_fewer_requests_than_the_batch_limit_the_work_ahead_runs_on_fewer_slots():
    ft = FinishTimes()
    running = _running(2, tokens=50)
    w = make_worker(running=running, max_num_seqs=8, num_kv_blocks=40, kv_block_size=16)
    w.num_kv_blocks_used = 40  # the two running requests hold the whole cache: 2 run at once, not 8
    now = _timed(ft, w, 0.1)  # 60 of 100 tokens made now
    w.waiting = deque(_running(2, max_tokens=100))
    new = make_requests(1, prefix="new", model="default")[0]
    new.max_output_tokens = 10
    p = ft.predict([w], new, now + 0.01)[0]
    assert p.waits
    # ahead: 2 x 40 running + 2 x 100 waiting = 280 tokens over the 2 requests the cache holds
    assert abs(p.finish_s - (0.1 * 280 / 2 + 0.1 * 10)) < 1e-6


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


# --- the work queued ahead read from the queue's counts by length, not walked at each arrival ------------------

def test_queue_limit_reads_the_queues_counted_lengths_and_refuses_as_the_walk_does(monkeypatch):
    from collections import Counter

    from controlplane import hookimpl
    from plugins import finish_time
    from plugins.admission import QueueLimit

    class Checked(QueueLimit):
        """queue-limit with max_finish_s; at each admission every queue's counts and the work ahead they give
        are checked against a walk of the queue."""

        name = "length-checked-queue-limit"

        def __init__(self) -> None:
            super().__init__(QueueLimit.Settings(max_finish_s=20.0))
            self.differ, self.checked, self.longest, self.preempted = [], 0, 0, 0

        @hookimpl
        def cp_admit_request(self, ctx, request):
            lengths = self._finish.lengths
            for w in ctx.workers.values():
                q = w.waiting
                kept = q.lengths, lengths.remaining_total(w.model, q.lengths)
                walked = (dict(Counter((r.output_tokens, r.max_output_tokens) for r in q)),
                          sum(map(lengths.remaining, q)))
                if kept != walked:
                    self.differ.append((request.request_id, w.worker_id, kept, walked))
                self.checked += 1
                self.longest = max(self.longest, len(q))
                self.preempted += any(made > 0 for made, _ in q.lengths)
            return super().cp_admit_request(ctx=ctx, request=request)

    # overloaded, prefix hits, preemptions (preempted requests wait with tokens made), replicas started and drained
    enabled = ["prefix-cache", "least-loaded", "continuous-batching", "fixed-replicas", "static-memory",
               "builtin-latency-models"]
    kept, _, checker = replay_kept_and_walked(monkeypatch, finish_time, Checked, overloaded_trace(prompt_tokens=48),
                                              enabled, num_kv_blocks=100)
    assert checker.checked > 1500 and checker.preempted > 100
    assert checker._finish.lengths.typical("default") is not None
    assert 100 < kept.summary["num_rejected"] < 1400
