"""One overloaded replay run twice: a policy reading the queues' kept totals (`controlplane.waiting_queue`), then
walking every queue (its module's ``WaitingQueue`` replaced by `NotKept`); the two must agree row for row."""

from __future__ import annotations

from dataclasses import replace

from controlplane.testing import ScaleCycle, make_trace, replay_with


class NotKept:
    """Put in place of `WaitingQueue` in a policy's module: no queue is one, so the policy walks every queue."""


def overloaded_trace(prompt_tokens: int = 300, priorities: int = 1) -> list:
    """1,500 requests at 60/s (queues of hundreds on two replicas), with prefix hits and ``priorities`` levels."""
    return [replace(t, hash_ids=(i % 5, 100 + i % 3, 1000 + i), hash_block_tokens=16, priority=i % priorities)
            for i, t in enumerate(make_trace(1500, qps=60.0, prompt_tokens=prompt_tokens, output_tokens=200, seed=5))]


def replay_kept_and_walked(monkeypatch, module, make_checker, trace, enabled, *, num_kv_blocks: int = 300,
                           **overrides):
    """``(kept, walked, checker)``: the replay with the kept totals, the same replay walking, and the first run's
    checker (a subclass of the policy that compares the kept totals with a walk at each call, keeping ``differ``,
    ``checked`` and ``longest``). Two replicas, started and drained (`ScaleCycle`), preempting."""
    cluster = {"models": [{"name": "default", "replicas": 2, "cold_start_s": 3.0, "max_num_seqs": 32,
                           "num_kv_blocks": num_kv_blocks}]}
    runs, checkers = [], []
    for walk in (False, True):
        if walk:
            monkeypatch.setattr(module, "WaitingQueue", NotKept)
        checker = make_checker()
        res = replay_with(checker, ScaleCycle(), trace=trace, plugins={"enabled": enabled}, cluster=cluster,
                          **overrides)
        assert len(res.requests) == len(trace) and res.summary["num_plugin_errors"] == 0
        assert checker.differ == [] and checker.checked > 1000 and checker.longest > 100
        runs.append(res)
        checkers.append(checker)
    kept, walked = runs
    assert kept.summary["num_preemptions"] > 20
    assert [row(r) for r in kept.requests] == [row(r) for r in walked.requests]
    assert [decision(d) for d in kept.decisions] == [decision(d) for d in walked.decisions]  # (scores included)
    assert summary(kept) == summary(walked)
    return kept, walked, checkers[0]


def row(r):
    return (r.request_id, r.worker_id, r.status, r.priority, r.scheduled_s, r.first_token_s, r.finish_s,
            r.output_tokens, r.cached_tokens, r.num_preemptions, r.reason, r.reason_code, r.retry_after_s)


def decision(d):
    return d.time_s, d.hook, d.plugin, d.action, d.subject, d.reason, d.payload


def summary(res):
    return {k: v for k, v in res.summary.items() if k != "wall_s"}  # (the one figure of the host's, not the run's)
