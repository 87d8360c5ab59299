"""Where two replays of the same trace, config and seed part: the first decision, else the first request, that
differs. A simulated replay is deterministic, so any difference is a policy reading the wall clock, the global
random module or state kept outside the run (`controlplane.testing.assert_reproducible` reports it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.types import Decision, Request

#: What a finished request's outcome is compared by.
_OUTCOME = ("status", "worker_id", "cache_hit", "scheduled_s", "first_token_s", "finish_s", "output_tokens",
            "num_preemptions")


def first_difference(decisions_a: Sequence[Decision], decisions_b: Sequence[Decision],
                     finished_a: Sequence[Request], finished_b: Sequence[Request]) -> str | None:
    """The first place two replays differ, in words (naming the request where the decision names one); None when
    every decision and every finished request is the same."""
    for i, (da, db) in enumerate(zip(decisions_a, decisions_b)):
        if _decision(da) != _decision(db):
            about = f" about {da.subject}" if da.subject == db.subject and da.subject is not None else ""
            return (f"decision #{i + 1} ({da.hook}{about}) differs: the first replay's was {_shown(da)}, the "
                    f"second's {_shown(db)}")
    if len(decisions_a) != len(decisions_b):
        longer, n = ("first", len(decisions_b)) if len(decisions_a) > len(decisions_b) else ("second", len(decisions_a))
        extra = (decisions_a if longer == "first" else decisions_b)[n]
        return f"the {longer} replay made more decisions: after the {n} both made, {_shown(extra)}"
    by_id = {r.request_id: r for r in finished_b}
    for ra in finished_a:
        rb = by_id.get(ra.request_id)
        if rb is None:
            return f"request {ra.request_id} finished in the first replay only ({ra.status.value})"
        for name in _OUTCOME:
            va, vb = _value(getattr(ra, name)), _value(getattr(rb, name))
            if va != vb:
                return f"request {ra.request_id} differs first: its {name} was {va!r} in the first replay, {vb!r} in the second"
    missing = sorted(set(by_id) - {r.request_id for r in finished_a})
    if missing:
        return f"request {missing[0]} finished in the second replay only"
    return None


def _decision(d: Decision) -> tuple[Any, ...]:
    return d.time_s, d.hook, d.plugin, d.action, d.subject, d.reason, d.payload, d.is_error


def _value(v: Any) -> Any:
    return getattr(v, "value", v)  # (an enum by its value)


def _shown(d: Decision) -> str:
    payload = f" {d.payload}" if d.payload else ""
    return f"{d.plugin} {d.action or 'none'} at {d.time_s:.6g} s{payload} ({d.reason!r})"
