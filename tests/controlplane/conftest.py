"""Fixtures for driving the core directly, without the simulator."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane import actions as act
from controlplane import events as ev
from controlplane.session import RunSession
from controlplane.testing import EventLog, make_config


class CoreHarness:
    """A run's core built the way `RunSession` builds it (no database), fed events by hand."""

    def __init__(self, *plugins: object, **overrides: Any) -> None:
        self.log = EventLog()
        self.session = RunSession(
            make_config(**overrides), mode="sim", record=False, extra_plugins=[*plugins, self.log]
        )
        self.core = self.session.core
        self.actions: list[Any] = []
        started = self.core.start()
        self.worker_ids = [a.worker_id for a in started if isinstance(a, act.StartWorker)]
        for wid in self.worker_ids:
            self.handle(ev.WorkerReady(0.0, wid))

    def handle(self, event: Any) -> list[Any]:
        out = self.core.handle(event)
        self.actions.extend(out)
        return out

    @staticmethod
    def batches(actions: list[Any]) -> list[Any]:
        return [a.batch for a in actions if isinstance(a, act.StartBatch)]


@pytest.fixture
def harness():
    return CoreHarness
