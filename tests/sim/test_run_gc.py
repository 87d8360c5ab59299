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
