"""benchmarks/fidelity.py's progress lines say "n/a" and why where a figure is not known, not Python's None
(session 36's benchmark tester: `worker on a core None of its iterations' time`, `(5 s windows): ; correlation None`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fidelity_bench", ROOT / "benchmarks" / "fidelity.py")
F = importlib.util.module_from_spec(_spec)
sys.modules["fidelity_bench"] = F
_spec.loader.exec_module(F)

from fidelity_lib.host_cpu import IN_PROCESS, NEVER_BUSY, host_text  # noqa: E402  (benchmarks/ is on sys.path now)
from fidelity_lib.protocol_report import pace_by_busy_line  # noqa: E402


def test_host_and_busy_fraction_lines_say_na_and_why_not_none():
    from fidelity_lib.host_cpu import contention

    thread = host_text({"others_cores_mean": 1.798, "others_cores_max": 1.834, "worker_cpu_per_backend": None,
                        "worker_cpu_note": IN_PROCESS})
    assert "None" not in thread and "other jobs 1.798 cores (max 1.834)" in thread and "--pool thread" in thread
    assert "n/a" in host_text({}) and "None" not in host_text({})
    assert host_text({"others_cores_mean": 0.5, "others_cores_max": 1.0, "worker_cpu_per_backend": 0.91}).endswith(
        "worker on a core 0.910 of its iterations' time")

    class Sampler:  # two CPU samples 1 s apart: (time, driver, worker, machine busy)
        rows = [(0.0, 0.0, 0.0, 0.0), (1.0, 0.2, 0.9, 2.0)]

        def per_second(self, clock, t0):
            return [(0.0, 0.2, 0.9, 0.9)]

    assert contention(Sampler(), (0.0, 0.0), 0.0, {0: 0.8}, worker_is_child=False)["worker_cpu_note"] == IN_PROCESS
    assert contention(Sampler(), (0.0, 0.0), 0.0, {0: 0.1})["worker_cpu_note"] == NEVER_BUSY
    assert "worker_cpu_note" not in contention(Sampler(), (0.0, 0.0), 0.0, {0: 0.8})

    empty = {"idle": {"windows": 0, "median": None}, "busy": {"windows": 0, "median": None}, "correlation": None}
    line = pace_by_busy_line(empty)
    assert "None" not in line and ": ;" not in line and "n/a (no run had a full 5 s window" in line
    assert "correlation n/a (fewer than 3" in line
    full = pace_by_busy_line({"busy": {"windows": 4, "median": 1.25}, "correlation": 0.5})
    assert "busy: 1.250 (4 windows)" in full and full.endswith("correlation 0.500")
