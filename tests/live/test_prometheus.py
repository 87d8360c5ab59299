"""The Prometheus exporter's counts (`controlplane.live.prometheus`)."""

from __future__ import annotations

from controlplane import Plugin, hookimpl
from controlplane.live.prometheus import PrometheusExporter
from controlplane.plugin_manager import MAX_RECORDED_ERRORS
from controlplane.testing import make_trace, replay_with


class Raising(Plugin):
    name = "raising"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        raise RuntimeError("no route")


def test_plugin_errors_total_counts_every_caught_exception_past_the_recorded_ones():
    exporter = PrometheusExporter()
    n = MAX_RECORDED_ERRORS + 50
    res = replay_with(Raising(), exporter, trace=make_trace(n, qps=50))
    recorded = [d for d in res.decisions if d.is_error]
    assert len(recorded) == MAX_RECORDED_ERRORS  # the decisions stop at the cap
    counted = exporter.registry.get_sample_value("controlplane_plugin_errors_total",
                                                 {"plugin": "raising", "hook": "cp_route_request"})
    assert counted == res.summary["plugin_error_counts"]["raising"]["cp_route_request"] == n
