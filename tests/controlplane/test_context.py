"""The run's clock, ids and the read-only context policies receive."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane.context import Clock, IdSource, PolicyContext, RunInfo
from controlplane.testing import make_config, make_context, make_worker


def test_context_reads_the_clock_the_driver_moves():
    clock = Clock(3.5)
    ctx = PolicyContext(clock=clock, rng=np.random.default_rng(0), config=make_config(),
                        run=RunInfo(run_id=None, mode="sim", seed=0), workers={}, metrics={})
    assert ctx.now_s == 3.5
    clock.now_s = 7.0  # the driver moves the clock; policies only read it
    assert ctx.now_s == 7.0
    assert make_context(now_s=2.0).now_s == 2.0


def test_context_rng_is_seeded_per_context():
    a, b, c = make_context(seed=1), make_context(seed=1), make_context(seed=2)
    draws = [x.rng.random(4).tolist() for x in (a, b, c)]
    assert draws[0] == draws[1] != draws[2]


def test_ids_are_per_source_and_per_kind():
    a, b = IdSource(), IdSource()
    assert [a.next("batch"), a.next("batch"), a.next("worker")] == [0, 1, 0]
    assert b.next("batch") == 0


def test_context_exposes_workers_config_and_run():
    w = make_worker("default-3")
    ctx = make_context(workers=[w], config=make_config(seed=4), metrics={"queue:default": 2})
    assert ctx.workers == {"default-3": w}
    assert ctx.config.seed == 4 and ctx.run.mode == "sim"
    assert ctx.metrics["queue:default"] == 2


def test_a_seeded_context_makes_its_generator_when_first_read():
    def context(**rng):
        return PolicyContext(clock=Clock(), config=make_config(), run=RunInfo(run_id=None, mode="sim", seed=5),
                             workers={}, metrics={}, **rng)

    lazy = context(rng_seed=5)
    assert lazy._rng is None  # nothing drawn, nothing made
    assert lazy.rng is lazy.rng and isinstance(lazy.rng, np.random.Generator)
    assert lazy.rng.random(3).tolist() == np.random.default_rng(5).random(3).tolist()
    given = np.random.default_rng(1)
    assert context(rng=given).rng is given
    with pytest.raises(TypeError):
        context()
    with pytest.raises(TypeError):
        context(rng=given, rng_seed=1)


def test_mid_batch_reads_are_the_workers_own_where_no_driver_runs_batches_of_several_iterations():
    # (the simulator's fast mode binds `batch_now`; the exact mode, a live run and a test context do not)
    w = make_worker("default-0")
    ctx = make_context(workers=[w])
    assert ctx.batch_now(w) is None and ctx.batch_progress(w) == (0, 0.0)
    assert ctx.request_progress(w) == {} and ctx.prefilled_now(w) == []
    assert ctx.kv_blocks_used(w) == w.num_kv_blocks_used
