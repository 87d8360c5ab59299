"""benchmarks/fidelity.py shows a profile's "row(s) measured far from the fit" warning once, not at every fit
(session 36's benchmark tester: 82 such warnings in one --quick run)."""

from __future__ import annotations

import importlib.util
import io
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F
_spec.loader.exec_module(F)

from fidelity_lib.warn_once import far_rows_once  # noqa: E402  (benchmarks/ is on sys.path now)


def _far(source: str, n: int) -> None:
    warnings.warn(f"{source}: {n} row(s) measured far from the fit (measured / fitted below 1/3 or above 3; left out "
                  f"of the per-batch-size factors): row 1 (0.03 s, 4x)", RuntimeWarning, stacklevel=1)


def test_the_far_rows_warning_is_shown_once_per_profile_and_the_rest_counted():
    shown, tail = [], io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # (each fit's message differs in its count: Python's own filter let all by)
        warnings.showwarning = lambda message, *_a, **_k: shown.append(str(message))
        with far_rows_once(tail) as seen:
            for k in range(40):  # every simulation fits its profile again: 40 fits, 2 profiles
                _far("/tmp/a/calibration-light.json", 1 + k % 3)
                _far("profile", 2)
            warnings.warn("something else", RuntimeWarning, stacklevel=1)
        assert sum("measured far from the fit" in m for m in shown) == 2 and "something else" in shown
        assert seen == {"/tmp/a/calibration-light.json": 40, "profile": 40}
        assert "78 more" in tail.getvalue() and "calibration-light.json 39" in tail.getvalue()
        with far_rows_once(io.StringIO()):
            _far("/tmp/a/calibration-light.json", 1)  # a new block: shown again
        assert sum("measured far from the fit" in m for m in shown) == 3


def test_a_profile_s_other_notes_and_its_runs_past_the_rows_lines_are_shown_once():
    """Each of the benchmark's simulations loaded its profile again and warned its notes (a fit off its rows, no
    prefill over a context, ...) and each replay logged its 'past every row' line: 100 lines in two minutes of a
    --quick run, enough to fill a pipe read only at the end."""
    import logging

    from controlplane.hardware.profile_format import ProfileWarning

    shown, tail = [], io.StringIO()
    logged = []

    class Keep(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    log = logging.getLogger("sim.replay")
    handler = Keep()
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *_a, **_k: shown.append(str(message))
            with far_rows_once(tail):
                for k in range(11):
                    warnings.warn(ProfileWarning("/tmp/a/light.json: no row prefills over a cached context"),
                                  stacklevel=1)
                    log.warning("deployment 'fidelity': %d of 208 iterations priced (12.5%%) were past every row of "
                                "/tmp/a/light.json (more decode sequences: 25): extrapolated", 20 + k)
                log.warning("another line")
    finally:
        log.removeHandler(handler)
    assert shown == ["/tmp/a/light.json: no row prefills over a cached context"]
    assert [m for m in logged if "past every row" in m] == [logged[0]] and "another line" in logged
    assert "20 more warning(s) of the same profiles left out" in tail.getvalue()
