"""The report's figures leave the caller's matplotlib alone: a report made from a notebook switched
its backend to Agg (``matplotlib.use("Agg", force=True)``), and ``plt.show()`` stopped working."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import matplotlib
matplotlib.use("svg")  # the caller's own choice (a notebook's inline backend, TkAgg, ...)
import matplotlib.pyplot as plt
fig, ax = plt.subplots(); ax.plot([1, 2, 3])  # the caller's own open figure
from controlplane.report.plots import pareto_plot
points = [{"cost": 1.0, "attainment": 0.9}, {"cost": 2.0, "attainment": 0.99}]
png = pareto_plot(points, points, "USD/h", 0.95)
assert png.startswith(b"\\x89PNG"), png[:8]
print(matplotlib.get_backend(), plt.get_fignums())
"""


def test_a_report_figure_keeps_the_callers_backend_and_figures():
    # (in a process of its own: the backend is process-wide state the other tests share)
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "[1]"]


def test_a_live_runs_time_axis_is_no_simulated_time():
    from types import SimpleNamespace

    from controlplane.report.plots import seconds_label

    assert seconds_label(SimpleNamespace(run={"mode": "live"})) == "run seconds"
    assert seconds_label(SimpleNamespace(run={"mode": "sim"})) == "simulated seconds"
