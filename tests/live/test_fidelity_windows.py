"""benchmarks/fidelity.py: a trace too short for its windows is refused in one line (exit 2) before the live runs
that need them; the capacity sweep stays within the cap it states (session 36's benchmark tester)."""

from __future__ import annotations

import importlib.util
import math
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F
_spec.loader.exec_module(F)

from fidelity_lib import capacity as CAP  # noqa: E402  (benchmarks/ is on sys.path once fidelity.py is loaded)
from fidelity_lib.protocol_report import capacity_note  # noqa: E402
from fidelity_lib.slices import TraceTooShort  # noqa: E402
from fidelity_lib.window_plan import check_windows, grown_capacity_window, preflight  # noqa: E402
from sim.traces import TraceRequest, write_canonical  # noqa: E402


def _args(**kw) -> Namespace:
    base = dict(low_slices=1, high_slices=1, low_load=0.4, high_load=0.9, high_arrivals="poisson", low_s=3.0,
                high_s=3.0, capacity_s=3.0, capacity_fractions=(0.8, 1.2), capacity_max_fraction=1.2)
    return Namespace(**{**base, **kw})


# --- 1. a trace too short: refused in one line, naming the window, before the live runs that need it -------------


def test_a_window_the_trace_cannot_fill_is_refused_naming_it_what_it_needs_and_has():
    check_windows(300, [("calibration", 200), ("low-1", 100)])  # exactly enough
    with pytest.raises(TraceTooShort) as e:
        check_windows(243, [("calibration", 725)])  # the tester's Azure --start-s 3380 case
    text = str(e.value)
    assert "'calibration' needs 725 requests, the trace has 243" in text and "\n" not in text
    assert "--calibration-s" in text and e.value.EXIT_STATUS == 2
    with pytest.raises(TraceTooShort, match=r"'high-2' needs 50 requests, the trace has 40 .*the first 260"):
        check_windows(300, [("low-1", 60), ("high-2", 50)], at=200)
    with pytest.raises(TraceTooShort, match="needs at least 177"):  # tiny.csv: 28 requests, a light run of 173
        preflight(_args(), 28, 173)
    preflight(_args(), 173 + 16, 173)  # the light run and 4 for each later window (heavy, low, high, capacity)
    with pytest.raises(TraceTooShort, match="'capacity' needs at least 4"):
        preflight(_args(), 173 + 15, 173)


def test_a_trace_too_short_for_the_calibration_is_refused_before_any_live_run(tmp_path, monkeypatch, capsys):
    """tiny.csv (28 requests, 40 s apart): the light run planned 173 of them, ran live, then StatisticsError."""
    from fidelity_lib.protocol import Protocol

    def no_live_run(*_a, **_k):
        raise AssertionError("a live run started for a trace too short for it")

    monkeypatch.setattr(Protocol, "live", no_live_run)
    write_canonical([TraceRequest(str(i), i * 40.0, 500, 60) for i in range(28)], tmp_path / "tiny.csv")
    with pytest.raises(SystemExit) as e:
        F.main(["--quick", "--trace", str(tmp_path / "tiny.csv"), "--format", "canonical", "--grid-max-batch", "2",
                "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    refusal = [line for line in err.splitlines() if "too short" in line]
    assert len(refusal) == 1 and "window 'calibration' needs at least" in refusal[0]
    assert "the trace has 28" in refusal[0] and "Traceback" not in err


# --- 2. the capacity sweep stays within its cap, and says when its requests repeat ------------------------------


def test_planned_sweep_rates_are_clipped_to_the_sweeps_cap():
    """Mooncake --quick: 0.8 and 1.2 x 42.13/s planned, the cap 47.67/s (a 144-request window for 3 s): 50.56/s ran."""
    rates = CAP.planned_rates((0.8, 1.2), 42.13, 47.67)
    assert rates == [pytest.approx(33.704), 47.67]
    assert CAP.planned_rates((1.2, 1.3), 42.13, 47.67) == [47.67]  # clipped twice: run once
    assert CAP.planned_rates((0.7, 1.0), 10.0, math.inf) == [7.0, 10.0]
    from fidelity_lib.slices import count_for

    assert count_for(47.67, 3.0) <= 144  # a run at the cap replays no request twice


def test_a_capacity_window_sized_below_its_simulated_capacitys_cap_takes_more_requests():
    a = _args()
    # sized on the Poisson capacity 40/s (1.2 x 40 for 3 s: 145); the window's own is 42.13/s: 153 wanted
    assert grown_capacity_window(a, 42.13, 145, 5000, 100, False) == (153, False)
    assert grown_capacity_window(a, 42.13, 145, 150, 100, False) == (150, True)  # all left, going round them
    assert grown_capacity_window(a, 42.13, 145, 145, 100, False) is None  # none left to take: the cap is the window's
    assert grown_capacity_window(a, 30.0, 145, 5000, 100, False) is None  # big enough
    assert grown_capacity_window(a, 42.13, 145, 5000, 100, True) is None  # already going round


def test_the_capacity_note_names_the_highest_rate_swept_not_only_the_cap():
    note = capacity_note(CAP.Crossing(47.67, "above"), CAP.Crossing(40.0, "within"), 47.67, 10.0, 42.13)
    assert "up to the highest rate swept, 47.67/s" in note and "lower bound" in note
