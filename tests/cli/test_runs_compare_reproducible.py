"""`runs compare` of two replays with the same config, seed, trace and plugin versions whose results differ: a plugin
read state outside the run (here a module-level random generator), and the compare presented that noise as a
difference between the runs ("B higher", with intervals). Now a note says the runs should have been the same."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from controlplane import Plugin, hookimpl
from controlplane.cli import app
from controlplane.decisions import RouteDecision
from controlplane.testing import make_trace, replay_with

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")

_OUTSIDE = random.Random(7)  # state outside the run: advanced by every replay


class OutsideRandomRouter(Plugin):
    name = "outside-random-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(_OUTSIDE.choice(list(workers)).worker_id, "outside random")


class FirstRouter(Plugin):
    name = "first-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(workers[0].worker_id, "first")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> str:
    """Runs 1, 2: the outside-random router twice; 3, 4: a reproducible router twice; 5: the first with another
    seed."""
    db = f"sqlite:///{tmp_path_factory.mktemp('reproducible') / 'runs.db'}"
    trace = make_trace(120, qps=6)
    for plugin, seed in ((OutsideRandomRouter, 1), (OutsideRandomRouter, 1), (FirstRouter, 1), (FirstRouter, 1),
                         (OutsideRandomRouter, 2)):
        replay_with(plugin(), trace=trace, db_url=db, seed=seed)
    return db


def _compare(db: str, a: int, b: int, *args: str):
    done = CliRunner().invoke(app, ["runs", "compare", str(a), str(b), "--db", db, "--resamples", "100", *args])
    assert done.exit_code == 0, done.output
    return done


def test_two_runs_that_should_be_the_same_and_differ_are_noted(runs):
    found = json.loads(_compare(runs, 1, 2, "--json").stdout)
    assert found["not_reproducible"] is True
    note = found["reproducibility_note"]
    assert note.startswith("note: runs 1 and 2 have the same config, seed, trace, transforms and requests")
    assert "a plugin is not reproducible" in note and "assert_reproducible" in note
    assert "outside-random-router" in note  # (no version: its code may have changed too)
    assert note in found["notes"]
    table = _compare(runs, 1, 2, "--no-ci")  # the tables' notes on stderr, with or without intervals
    assert "a plugin is not reproducible" in " ".join(table.stderr.split())


def test_runs_that_agree_or_differ_in_what_decides_them_get_no_note(runs):
    for a, b in ((3, 4), (1, 5), (1, 3)):  # the same results; another seed; other plugins
        found = json.loads(_compare(runs, a, b, "--json", "--no-ci").stdout)
        assert found["not_reproducible"] is False and found["reproducibility_note"] is None, (a, b)
