"""What a policy sees (`ScalingContext`) is documented as the code has it: docs/autoscaling.md's "What a policy sees"
and docs/plugins.md's `cp_scale` reference name the iteration estimate's arguments as the simulator binds them (its
fourth, the prefill chunk's context, was left out) and `cold_start_s`, and neither says the simulator's binding
prices no prefill context."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from sim.latency.estimate import iteration_estimator

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + len(heading))
    return " ".join(text[start:end.start() if end else len(text)].split())


def _estimate_arguments() -> list[str]:
    """The arguments of the simulator's `ScalingContext.iteration_s` (its estimate with the model bound)."""
    names = list(inspect.signature(iteration_estimator({})).parameters)
    assert names[0] == "model"
    return names[1:]


def test_what_a_policy_sees_names_every_argument_of_iteration_s():
    section = _section((DOCS / "autoscaling.md").read_text(), "## What a policy sees")
    args = _estimate_arguments()
    assert len(args) == 4
    assert "iteration_s(" + ", ".join(args[:3]) + ", " + args[3] + "=0)" in section
    assert "cold_start_s" in section and "0-100 scale" in section


def test_the_cp_scale_reference_names_cold_start_and_iteration_s():
    section = _section((DOCS / "plugins.md").read_text(), "### `cp_scale`")
    args = _estimate_arguments()
    assert "`cold_start_s`" in section
    assert "iteration_s(" + ", ".join(args[:3]) + ", " + args[3] + "=0)" in section


def test_no_page_says_the_simulator_binding_prices_no_prefill_context():
    text = " ".join((DOCS / "autoscaling.md").read_text().split())
    assert "the simulator's own binding does not yet" not in text
    assert "interface has no prefill context" not in text
