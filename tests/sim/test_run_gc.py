"""sim.run_gc: the collector during a run, given back after it, and run between runs."""

from __future__ import annotations

import pytest

from controlplane import events as ev
from controlplane import hookimpl
from controlplane.testing import make_trace, replay_with


def test_run_gc_settings_are_given_back():
    """During a run the collector's youngest generation waits for more allocations and the
    objects from before the run are frozen; both are as they were afterwards, also on an error."""
    import gc

    from sim.run_gc import RUN_GC_THRESHOLD, run_objects_only_for_gc

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with run_objects_only_for_gc():
        assert gc.get_threshold() == RUN_GC_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    with pytest.raises(KeyError), run_objects_only_for_gc():
        raise KeyError("x")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_a_run_does_not_keep_an_earlier_run_s_objects(monkeypatch):
    """A dropped run's objects are reference cycles; the next run in the process collects them before it
    freezes what exists (else it keeps them through its own run, and a benchmark of many long replays grows by
    one run's memory per run: 22 GB and an OOM kill for ten replays of a million requests)."""
    import gc
    import weakref

    from controlplane import gc_freeze
    from controlplane.testing import EventLog
    from sim import run_gc

    monkeypatch.setattr(gc_freeze, "_frozen", False)  # as in a process that froze nothing: the driver freezes
    gc.unfreeze()  # (a test process: whatever an earlier test froze goes back to the collector)
    monkeypatch.setattr(run_gc, "_runs_started", 1)  # (another test may have run first, or not)
    trace = make_trace(200, qps=20.0, seed=1)
    earlier = EventLog()
    replay_with(earlier, trace=trace)
    gone = weakref.ref(earlier)
    del earlier
    assert gone() is not None  # a cycle: alive until a full collection

    class Looks(EventLog):
        seen = None

        @hookimpl
        def cp_on_event(self, event):
            if self.seen is None and isinstance(event, ev.RequestFinished):  # (the run's loop under way)
                self.seen = gone() is None
            super().cp_on_event(event)

    looks = Looks()
    res = replay_with(looks, trace=trace)
    assert looks.seen is True and res.summary["num_completed"] == 200
    gc.collect()


def test_objects_frozen_through_gc_freeze_are_not_counted_again(monkeypatch):
    """What `controlplane.gc_freeze.freeze` froze is known without ``gc.get_freeze_count()`` (a
    walk over every frozen object); the driver then leaves the caller's freeze alone."""
    import gc

    from controlplane import gc_freeze
    from sim.run_gc import run_objects_only_for_gc

    monkeypatch.setattr(gc_freeze, "_frozen", False)
    gc.unfreeze()  # (a test process: whatever an earlier test froze goes back to the collector)
    counted = []
    real_count = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counted.append(1) or real_count())
    frozen = real_count()
    with run_objects_only_for_gc():  # nothing frozen on purpose: the driver freezes and gives back
        assert real_count() > frozen
    assert counted == [1] and real_count() == frozen
    monkeypatch.setattr(gc_freeze, "_frozen", True)  # as after `gc_freeze.freeze()`
    with run_objects_only_for_gc():
        assert real_count() == frozen  # left to the caller
    assert counted == [1]  # and not counted


def test_overlapping_runs_give_the_settings_back_when_the_last_ends(monkeypatch):
    """Replays in two threads, the first ending before the second: each run saved and restored the
    process-wide thresholds, so the second gave back the first's (100000, 50, 100), for good."""
    import gc

    from controlplane import gc_freeze
    from sim.run_gc import RUN_GC_THRESHOLD, run_objects_only_for_gc

    monkeypatch.setattr(gc_freeze, "_frozen", False)
    gc.unfreeze()  # (a test process: whatever an earlier test froze goes back to the collector)
    before = gc.get_threshold()
    a, b = run_objects_only_for_gc(), run_objects_only_for_gc()
    a.__enter__()
    assert gc.get_freeze_count() > 0
    b.__enter__()
    a.__exit__(None, None, None)  # A ends first: B still runs with the run's settings and the freeze
    # (the count itself may fall a little: a frozen object freed by its reference count leaves the
    # permanent generation; an unfreeze would have emptied it)
    assert gc.get_threshold() == RUN_GC_THRESHOLD and gc.get_freeze_count() > 0
    b.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_replays_in_overlapping_threads_leave_the_thresholds_as_they_were():
    """Run A starts, then B; A ends while B runs, then B ends (each held at its first finished request,
    inside its run's loop, until the other has got that far)."""
    import gc
    import threading

    from controlplane.testing import make_config
    from sim.replay import replay

    before = gc.get_threshold()
    config = make_config()
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()

    class Hold:
        """At its run's first finished request: ``arrived`` set, then wait for ``until``."""

        def __init__(self, arrived, until):
            self.arrived, self.until, self.held = arrived, until, False

        @hookimpl
        def cp_on_event(self, event):
            if not self.held and isinstance(event, ev.RequestFinished):
                self.held = True
                self.arrived.set()
                assert self.until.wait(timeout=60)

    def run(hold, done=None):
        replay(make_trace(50, qps=20.0, seed=1), config, record=False, extra_plugins=[hold])
        if done is not None:
            done.set()

    a = threading.Thread(target=run, args=(Hold(a_in, b_in), a_done))
    b = threading.Thread(target=run, args=(Hold(b_in, a_done),))
    a.start()
    assert a_in.wait(timeout=60)
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)
    assert a_done.is_set() and not b.is_alive()
    assert gc.get_threshold() == before
