"""Scheduled scaling: replica counts from a timetable, applied at their times with cold starts."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from controlplane.testing import make_trace, replay_with
from plugins.autoscaling_schedule import ScheduledReplicas
from tests.fixtures.common import assert_conserved
from tests.plugins.test_autoscaling_policies import scale_events


def test_the_timetable_is_followed_and_no_request_is_lost():
    p = ScheduledReplicas(ScheduledReplicas.Settings(schedule=[(30.0, 3), (90.0, 1)]))
    res = replay_with(p, trace=make_trace(600, qps=5.0),
                      cluster={"models": [{"name": "default", "replicas": 2, "cold_start_s": 10.0}]})
    assert_conserved(res.summary)
    events = scale_events(res)
    assert [(frm, to) for _, frm, to in events] == [(2, 3), (3, 1)]  # configured 2 until 30 s
    assert 30.0 <= events[0][0] < 32.0 and 90.0 <= events[1][0] < 92.0
    decision = next(d for d in res.decisions if d.action == "scale")
    assert "schedule: 3 replicas from 30 s until 90 s" in decision.reason


def test_a_model_of_its_own_gets_its_own_table():
    s = ScheduledReplicas.Settings(schedule=[(0.0, 1)], models={"big": [(0.0, 4)]})
    p = ScheduledReplicas(s)
    assert p._table("big") == [(0.0, 4)] and p._table("other") == [(0.0, 1)]


def test_a_timetable_for_a_model_the_cluster_does_not_serve_is_warned_of(caplog):
    p = ScheduledReplicas(ScheduledReplicas.Settings(models={"defualt": [(0.0, 3)]}))
    with caplog.at_level(logging.WARNING, logger="plugins.autoscaling_schedule"):
        res = replay_with(p, trace=make_trace(20, qps=5.0))
    warned = [r.getMessage() for r in caplog.records if r.name == "plugins.autoscaling_schedule"]
    assert warned == ["plugins.settings.scheduled-replicas.models names 'defualt', which cluster.models does not "
                      "serve (served: default); its timetable is never used"]
    assert res.summary["num_completed"] == 20


def test_a_timetable_out_of_order_names_the_setting():
    with pytest.raises(ValidationError, match="schedule: entries must be in time order"):
        ScheduledReplicas.Settings(schedule=[(60.0, 2), (30.0, 1)])
    with pytest.raises(ValidationError, match="models.big: replica counts must be >= 0"):
        ScheduledReplicas.Settings(models={"big": [(0.0, -1)]})
