"""How parallel guardian verdicts combine (controlplane.guardian_checks)."""

from __future__ import annotations

from controlplane.guardian_checks import combine
from controlplane.guardian_config import GuardiansConfig


def _config(threshold: float) -> GuardiansConfig:
    return GuardiansConfig(combine="weighted", weighted_threshold=threshold,
                           models=[{"name": "a", "weight": 1.0}, {"name": "b", "weight": 3.0}])


def test_weighted_with_a_zero_threshold_blocks_on_any_blocker_and_passes_when_none_blocks():
    # weighted_threshold 0 (allowed) used to block every request: two passes gave verdict "block"
    # with no guardian and no reason
    passes = {"a": ("pass", 0.1, "ok"), "b": ("pass", 0.2, "ok")}
    out = combine(_config(0.0), None, passes)
    assert (out.verdict, out.guardian) == ("pass", "a,b")
    out = combine(_config(0.0), None, {**passes, "a": ("block", 0.9, "unsafe")})
    assert (out.verdict, out.guardian, out.reason) == ("block", "a", "a: unsafe")


def test_weighted_blocks_when_the_blockers_hold_the_threshold_share_of_the_weight():
    one_blocks = {"a": ("block", 0.9, "unsafe"), "b": ("pass", 0.2, "ok")}
    assert combine(_config(0.25), None, one_blocks).verdict == "block"  # 1 of 4
    assert combine(_config(0.5), None, one_blocks).verdict == "pass"
