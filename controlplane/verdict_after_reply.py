"""A guardian verdict that comes after the reply: what a request's row says once it is final.

An async check (an answer check, or a prompt check slower than the whole generation) lets the
reply go before its verdict: the request's row is written ``completed`` with ``guardian_verdict``
``pending`` (blank for a prompt check). When the final verdict comes (the plan's guardians
combined, a cascade's last tier), the core (`controlplane.responses`) emits a `VerdictAfterReply`
to the run's observers, and the SQL recorder (`controlplane.recording`) writes it onto the row,
after the row itself (`RunRecorder.add_request_verdict`): ``guardian_verdict`` leaves ``pending``
for the final verdict, and a block sets the row's ``reason`` to ``retracted: blocked after the
reply by GUARDIAN: WHY`` (`retracted_reason`). The status stays ``completed``: the answer was
served (its latencies and goodput are the run's). A block after the reply stays: a later pass of
the other stage's check does not undo it. The simulator and the daemon go the same way: the same
core emits it and the same recorder writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VerdictAfterReply", "retracted_reason"]


def retracted_reason(guardian: str | None, why: str | None) -> str:
    """The row's reason for an answer a guardian blocked after its reply."""
    return f"retracted: blocked after the reply by {guardian}: {why}"


@dataclass(slots=True)
class VerdictAfterReply:
    """The final verdict of a request already answered (outbound: core -> observers)."""

    time_s: float
    request_id: str
    verdict: str  # "pass" | "block", or a failure verdict its guardians' on_error left as it is
    guardian: str | None  # the guardian that decided (a combined outcome names the blocking one)
    reason: str | None  # why, as the guardian (or the combination) said
    stage: str  # "input": the prompt's check; "output": the answer's

    @property
    def row_reason(self) -> str | None:
        """The request row's new ``reason``: a block's retraction; None keeps the row's own."""
        return retracted_reason(self.guardian, self.reason) if self.verdict == "block" else None
