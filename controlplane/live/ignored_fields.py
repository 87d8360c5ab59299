"""Fields of a request body that the daemon accepts but ignores, made visible.

OpenAI-compatible servers accept fields they do not know (clients send ``metadata``, ``store``,
``service_tier``... and newer options than a server knows), so the daemon does too. But a
misspelt option silently ignored (``max_token`` for ``max_tokens``) is a trap: the request runs
with the default. As vLLM does, each ignored field is logged as a warning, here once per field
name for the daemon's life (with the known field it looks like, if any), and every response
names the request's ignored fields in its ``x-ignored-fields`` header. One request has at most
`MAX_LOGGED_PER_REQUEST` new names logged (the rest counted on one line, and warned about when a
later request sends them), so one body of made-up names can neither flood the log nor use up the
daemon's budget of names (`IgnoredFields`' ``max_remembered``) before a later client's typo.

Ignored: the body's unknown top-level fields and those of ``stream_options`` (named
``stream_options.NAME``), and ``stream_options`` itself without ``stream: true``. A message's own extra fields (``refusal``, ``annotations``... that a
client echoes back from an earlier answer) are not reported.
"""

from __future__ import annotations

import logging
import threading

from pydantic import BaseModel

from controlplane.errors import did_you_mean

__all__ = ["HEADER", "MAX_LOGGED_PER_REQUEST", "IgnoredFields", "header_value", "ignored_fields", "unknown_in_raw"]

log = logging.getLogger("controlplane.daemon")

HEADER = "x-ignored-fields"
_MAX_REPORTED = 32  # names in one header (a body has at most 2 MiB of them)
_MAX_NAME = 64  # characters of a name in the header and the log
#: New ignored names one request has warned about (and remembered) at most; its others are counted.
MAX_LOGGED_PER_REQUEST = 8


def ignored_fields(body: BaseModel) -> list[str]:
    """The names of ``body``'s fields that were accepted but are not used, sorted."""
    names = list(body.model_extra or ())
    nested = getattr(body, "stream_options", None)
    if isinstance(nested, BaseModel):
        if getattr(body, "stream", True):
            names += [f"stream_options.{k}" for k in nested.model_extra or ()]
        else:  # a known field, but one that only a stream uses (OpenAI refuses it; ignored here, not silently)
            names.append("stream_options")
    return sorted(names)


def _printable(name: str) -> str:
    clean = name.encode("unicode_escape").decode("ascii").replace(",", "\\x2c")  # ASCII, no control characters
    return clean if len(clean) <= _MAX_NAME else clean[:_MAX_NAME] + "..."


class IgnoredFields:
    """The daemon's record of the ignored field names it has warned about (one warning each)."""

    def __init__(self, max_remembered: int = 10_000) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._max = max_remembered  # names warned about at most (then: no more warnings)
        self._full = False

    def note(self, body: BaseModel, endpoint: str) -> str | None:
        """Warn about ``body``'s ignored fields not warned about yet; returns the header's value
        (None when nothing was ignored)."""
        names = ignored_fields(body)
        if not names:
            return None
        known = list(type(body).model_fields)
        with self._lock:
            unseen = [n for n in names if n not in self._seen]
            new = unseen[:max(0, min(MAX_LOGGED_PER_REQUEST, self._max - len(self._seen)))]
            self._seen.update(new)
            full = len(self._seen) >= self._max and not self._full
            self._full = self._full or full
            capped = len(unseen) - len(new) if len(self._seen) < self._max else 0  # (not for the budget's end)
        for name in new:
            if name in known:  # stream_options without stream
                what, hint = "request field", " (used only with stream: true)"
            else:
                what, hint = "unknown request field", _hint(body, name, known)
            log.warning("%s: ignoring the %s '%s'%s; responses name it in %s (logged once per field name)",
                        endpoint, what, _printable(name), hint, HEADER)
        if capped:  # (warned about when a later request sends them)
            log.warning("%s: %d more ignored field names in this request not logged (at most %d a request); %s "
                        "names the first %d", endpoint, capped, MAX_LOGGED_PER_REQUEST, HEADER, _MAX_REPORTED)
        if full:  # a client sending made-up names cannot grow the memory or flood the log
            log.warning("%d ignored field names seen: no warning for new ones (%s still names them)", self._max, HEADER)
        return header_value(names)


def _hint(body: BaseModel, name: str, known: list[str]) -> str:
    """The known fields an unknown ``name`` looks like: its siblings (a ``stream_options.NAME``'s are
    ``stream_options``' own fields, such as ``include_usage``), never its parent. A close cutoff: clients
    send fields of newer APIs, not only typos."""
    parent, dot, leaf = name.rpartition(".")
    if not dot:
        return did_you_mean(name, known, cutoff=0.8)
    nested = getattr(body, parent, None)
    siblings = list(type(nested).model_fields) if isinstance(nested, BaseModel) else []
    return did_you_mean(leaf, siblings, cutoff=0.8)


def header_value(names: list[str]) -> str:
    """The ``x-ignored-fields`` header naming ``names`` (printable, at most `_MAX_REPORTED`)."""
    shown = [_printable(n) for n in names[:_MAX_REPORTED]]
    return ",".join(shown) + (",..." if len(names) > _MAX_REPORTED else "")


def unknown_in_raw(body: object, model: type[BaseModel]) -> list[str]:
    """A body's top-level fields ``model`` does not know, read from the raw JSON: a body that failed
    validation never became a model, and its answer (a 400) names them all the same."""
    if not isinstance(body, dict):
        return []
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return sorted(str(k) for k in body if k not in known)
