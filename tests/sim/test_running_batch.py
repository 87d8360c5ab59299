"""Where a multi-iteration batch stands mid-run (`sim.running_batch.done_by`) and what its finished iterations
computed (`controlplane.iterations.tokens_after`): the fast mode's answer to a router that reads a replica's
remaining work and busy seconds while its batch runs (`PolicyContext.batch_progress`)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from controlplane.iterations import advance_batch, prefilled_by, progress_after, tokens_after
from controlplane.testing import make_requests
from controlplane.types import Batch
from plugins.scorers import work_tokens
from sim.running_batch import RunningBatch, done_by


def _rb(first_s=0.0, durations=None, steps=None, ends_after=None):
    rb = object.__new__(RunningBatch)
    rb.batch, rb.start_s, rb.first_s = None, 10.0, first_s
    rb.durations = None if durations is None else np.asarray(durations)
    rb.ends_s, rb.steps = None, steps
    n = (len(durations) if durations is not None else sum(k for k, _ in steps)) + (1 if first_s else 0)
    rb.timer = SimpleNamespace(_value=("w", ends_after or n, 0.0))
    return rb


@pytest.mark.parametrize("kind", ["durations", "steps"])
def test_done_by_counts_the_iterations_ended_and_when_the_last_ended(kind):
    spec = {"durations": [0.5, 0.5, 0.5, 0.5]} if kind == "durations" else {"steps": [(2, 0.5), (2, 0.5)]}
    rb = _rb(first_s=1.0, **spec)  # a prefill of 1 s, then 4 decodes of 0.5 s: 5 iterations
    assert done_by(rb, 10.5) == (0, 0.0)  # in its prefill
    assert done_by(rb, 11.0) == (1, 1.0)
    assert done_by(rb, 12.2) == (3, 2.0)
    assert done_by(rb, 13.0) == (4, 2.5)  # its own end (at 13 s) is not delivered yet: left out
    cut = _rb(first_s=1.0, ends_after=2, **spec)  # interrupted: it ends after iteration 2
    assert done_by(cut, 11.6) == (1, 1.0)


def test_a_batch_of_one_iteration_has_done_nothing_mid_batch():
    rb = _rb(durations=[0.5])
    rb.durations = None
    assert done_by(rb, 100.0) == (0, 0.0)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_tokens_after_is_the_work_advance_batch_takes_off(k):
    a, b, c = make_requests(3, prompt_tokens=64, output_tokens=50)
    for r in (b, c):  # running, decoding
        r.num_computed_tokens, r.output_tokens = 64, 3
    a.num_computed_tokens = 16  # a prefix hit: 48 tokens to prefill
    prefill = Batch(1, "w", ((a, 48),), (b,), max_iterations=9, then_decode=(a, b, c))
    decode = Batch(2, "w", (), (b, c), max_iterations=9)
    for batch in (prefill, decode):
        reqs = [copy.copy(r) for r in (a, b, c)]
        swap = dict(zip((a, b, c), reqs))
        batch = Batch(batch.batch_id, "w", tuple((swap[r], n) for r, n in batch.prefill),
                      tuple(swap[r] for r in batch.decode), 9, tuple(swap[r] for r in batch.then_decode))
        w = SimpleNamespace(waiting=[], running=reqs)
        before, done = work_tokens(w), tokens_after(batch, k)  # mid-batch: before the batch's end applies it
        advance_batch(batch, k, 0.0)
        assert before - work_tokens(w) == done


@pytest.mark.parametrize("k", [1, 2, 5])
def test_progress_after_and_prefilled_by_are_what_advance_batch_applies(k):
    # What a policy reads mid-batch of a running request (`PolicyContext.request_progress`, `prefilled_now`): its
    # tokens, its prompt computed, its first token, as the batch's end will apply them.
    a, b, c, d = make_requests(4, prompt_tokens=64, output_tokens=50)
    for r in (b, c):  # running, decoding
        r.num_computed_tokens, r.output_tokens, r.first_token_s = 64, 3, 1.0
    a.num_computed_tokens = 16  # a prefix hit: 48 tokens to prefill
    prefill = Batch(1, "w", ((a, 48), (d, 64)), (b,), max_iterations=9, then_decode=(a, b, c, d))
    decode = Batch(2, "w", (), (b, c), max_iterations=9)
    for batch in (prefill, decode):
        reqs = [copy.copy(r) for r in (a, b, c, d)]
        swap = dict(zip((a, b, c, d), reqs))
        batch = Batch(batch.batch_id, "w", tuple((swap[r], n) for r, n in batch.prefill),
                      tuple(swap[r] for r in batch.decode), 9, tuple(swap[r] for r in batch.then_decode))
        now, prefilled = progress_after(batch, k, 2.5), prefilled_by(batch, k)
        unchanged = {r: (r.output_tokens, r.num_computed_tokens, r.first_token_s) for r in reqs if r not in now}
        completed, _ = advance_batch(batch, k, 2.5)
        assert {r: (r.output_tokens, r.num_computed_tokens, r.first_token_s) for r in reqs} == {**now, **unchanged}
        assert prefilled == completed
    assert prefilled_by(prefill, 0) == []
