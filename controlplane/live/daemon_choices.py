"""A request's choices (its prompts x ``n``) are admitted together or not at all.

The core admits each choice on its own, one `Request` each. Two things keep a reply the client never gets from
being computed:

- Before any choice is submitted, an admission plugin that can tell (a ``refuses_choices(tenant, costs)`` method:
  `tenant-quota`) says whether the choices could ever be admitted together (a suspended tenant, more choices than
  its ``max_in_flight``, more tokens together than its ``burst_tokens``). If not, the request is refused at once,
  ``400 invalid`` (param ``n``) without ``Retry-After``: retrying the same request would never help, and the hook,
  asked one choice at a time, would refuse the last ones ``rate_limited`` for ever.
- A choice refused when it is submitted (its admission: rate limited now, a full queue) ends the submissions; the
  choices admitted before it are cancelled at once (leaving their worker at the next iteration if one runs them),
  recorded ``cancelled`` with the refusal's code and a reason naming the refused choice. The reply is the refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from controlplane.live.daemon_deps import APIError
from controlplane.live.results import LiveRequestHandle
from controlplane.types import ReasonCode

__all__ = ["cancel_if_refused", "refuse_never_admitted"]


def refuse_never_admitted(driver: Any, tenant: str | None, costs: Callable[[], Sequence[int]]) -> None:
    """Raise the daemon's 400 when an enabled admission plugin says the choices, each costing ``costs()[i]``
    tokens (prompt + max_tokens; counted only if a plugin asks), can never be admitted together."""
    asking = [fn for p in driver.session.plugins.loaded
              if callable(fn := getattr(p.instance, "refuses_choices", None))]
    if not asking:
        return
    counted = list(costs())
    for refuses in asking:
        refusal = refuses(tenant, counted)
        if refusal is not None and not refusal.admit:
            raise APIError(400, f"rejected: {refusal.reason}", param="n", code=ReasonCode.INVALID.value)


async def cancel_if_refused(driver: Any, handles: list[LiveRequestHandle]) -> bool:
    """Whether the last of ``handles`` ended as it was submitted without an answer (refused); the others are
    then cancelled, recorded with its code and a reason naming it."""
    last = handles[-1]
    if not last.done:
        return False
    refused = await last.result()  # (resolved: returns at once)
    if refused.ok:
        return False  # (answered at once: a cache hit)
    why = f"cancelled: choice {refused.request_id} of the same HTTP request was refused ({refused.reason})"
    for h in handles[:-1]:
        if not h.done:
            driver.cancel(h.request_id, why, refused.reason_code or ReasonCode.CLIENT_GONE)
    return True
