"""`interrupt_deferred`: Ctrl-C (a real SIGINT) during the block is raised when it ends; a second
one raises at once; outside the main thread nothing changes."""

from __future__ import annotations

import signal
import threading

import pytest

from sim.sweep.interrupt import interrupt_deferred


def test_ctrl_c_during_the_block_is_raised_when_it_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("after the signal")
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_second_ctrl_c_raises_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("not reached")
    assert done == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_block_without_ctrl_c_and_one_that_raises_are_left_alone():
    with interrupt_deferred():
        pass
    with pytest.raises(ValueError):
        with interrupt_deferred():
            raise ValueError("x")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_the_handler_is_not_touched():
    seen = []

    def body() -> None:
        with interrupt_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]


def test_while_stopping_a_further_ctrl_c_is_dropped_and_the_next_raises():
    from sim.sweep.interrupt import interrupts_held_while_stopping

    done = []
    with interrupts_held_while_stopping():
        signal.raise_signal(signal.SIGINT)  # (the same Ctrl-C delivered again, or pressed twice)
        done.append("cleanup goes on")
    assert done == ["cleanup goes on"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held_while_stopping():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # (the user insists: stops at once)
            done.append("not reached")
    assert done == ["cleanup goes on"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupted_command_drops_a_further_ctrl_c_until_it_exits():
    from sim.sweep.interrupt import hold_interrupts_until_exit

    hold_interrupts_until_exit()  # (tests/conftest.py puts the handler back after the test)
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def _second_ctrl_c_when_aborted(base, second=True):
    """A backend interrupted (Ctrl-C) at run ``base``, whose abort gets the Ctrl-C again (``second``): a
    terminal's Ctrl-C reaches the driver twice when a script also signals it, and a user may press it twice."""
    from sim.sweep.backends import Backend

    class Twice(Backend):
        def run(self, tasks, traces):
            for i, t in enumerate(tasks):
                if i == base:
                    raise KeyboardInterrupt
                yield from super().run([t], traces)

        def abort(self):
            if second:
                signal.raise_signal(signal.SIGINT)

    return Twice()


def _interrupt_of(call) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt ``call`` raised (a plain one, which pytest would take as the session's own, caught)."""
    try:
        call()
    except KeyboardInterrupt as exc:
        return exc
    return None


def test_a_second_ctrl_c_while_a_search_stops_leaves_its_row_marked_and_its_message(tmp_path, monkeypatch):
    """It cut the cleanup (a traceback from a connection being closed) and replaced `SearchInterrupted`, so the
    command said "interrupted: nothing was stored" of a search that had stored its sweep."""
    from sqlalchemy import select

    import sim.sweep.search
    from controlplane.storage import make_engine
    from controlplane.storage.models import Sweep
    from sim.sweep import load_spec
    from sim.sweep.search import SearchInterrupted, search

    monkeypatch.setattr(sim.sweep.search, "make_backend", lambda *args, **kwargs: _second_ctrl_c_when_aborted(1))
    loaded = load_spec(data={"trace": {"limit": 40}, "space": {"cluster.models.0.replicas": [1, 2]},
                             "base": {"slo": {"ttft_s": 30, "tpot_s": 5}}})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    stopped = _interrupt_of(lambda: search(loaded, target=0.5, db_url=db))
    assert isinstance(stopped, SearchInterrupted) and stopped.sweep_id == 1
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status)).scalar_one() == "interrupted"
    engine.dispose()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (put back)


def test_a_second_ctrl_c_while_a_sweep_stops_leaves_its_row_marked_and_its_message(tmp_path, monkeypatch):
    from sqlalchemy import select

    import sim.sweep.run
    from controlplane.storage import make_engine
    from controlplane.storage.models import Sweep
    from sim.sweep import load_spec, run_sweep
    from sim.sweep.run import SweepInterrupted

    real_finish = sim.sweep.run.finish_sweep

    def finish_after_a_second_ctrl_c(*args, **kwargs):  # (the Ctrl-C again, as the sweep row is being marked)
        signal.raise_signal(signal.SIGINT)
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(sim.sweep.run, "make_backend", lambda *args, **kwargs: _second_ctrl_c_when_aborted(1, False))
    monkeypatch.setattr(sim.sweep.run, "finish_sweep", finish_after_a_second_ctrl_c)
    loaded = load_spec(data={"trace": {"limit": 20}, "record": "summary",
                             "space": {"cluster.models.0.replicas": [1, 2, 3]}})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    stopped = _interrupt_of(lambda: run_sweep(loaded, db, backend="pool"))
    assert isinstance(stopped, SweepInterrupted) and (stopped.sweep_id, stopped.stored) == (1, 1)
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status)).scalar_one() == "interrupted"
    engine.dispose()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_stops_a_sweep_as_ctrl_c_does_once_the_run_being_written_is_written(tmp_path, monkeypatch):
    """SIGTERM (`kill`, `timeout`, a container runtime) ended the sweep's driver at once: the sweep was left
    `running` (then `crashed`); where SIGINT is ignored (a script's background job), taken as Ctrl-C with nothing
    holding it, it landed in a run's write and left the database locked."""
    import os

    from sqlalchemy import func, select

    import sim.sweep.run
    from controlplane.storage import make_engine
    from controlplane.storage.models import Run, Sweep
    from sim.sweep import load_spec, run_sweep
    from sim.sweep.run import SweepInterrupted

    real_store = sim.sweep.run.store_outcome

    def store_after_a_sigterm(*args, **kwargs):  # (SIGTERM as the first run is being written)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_store(*args, **kwargs)

    monkeypatch.setattr(sim.sweep.run, "store_outcome", store_after_a_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (tests/conftest.py puts the handlers back after the test)
    loaded = load_spec(data={"trace": {"limit": 20}, "space": {"cluster.models.0.replicas": [1, 2, 3]}})
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    stopped = _interrupt_of(lambda: run_sweep(loaded, db, backend="serial"))
    assert isinstance(stopped, SweepInterrupted) and (stopped.sweep_id, stopped.stored) == (1, 1)
    assert stopped.interrupted_by == "SIGTERM"
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.execute(select(Sweep.status)).scalar_one() == "interrupted"
        assert conn.execute(select(func.count()).select_from(Run).where(Run.status == "finished")).scalar_one() == 1
    engine.dispose()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (given back)
