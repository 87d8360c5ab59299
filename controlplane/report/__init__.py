"""Self-contained HTML reports of a run or a sweep (`controlplane runs report`): matplotlib
figures embedded as PNG data URIs, a sortable table, no network. Also the cost of a run
(``cost``) and the Pareto front of cost against attainment (``pareto``)."""

from controlplane.report.html import run_report, sweep_report, write_report

__all__ = ["run_report", "sweep_report", "write_report"]
