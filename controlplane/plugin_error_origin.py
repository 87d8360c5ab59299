"""Where a plugin's error was raised: the innermost frame of the plugin's own code, and the traceback from the
plugin's hook down, bounded in size.

`controlplane.hook_calls.HookMonitor` keeps it for the first error of each plugin and hook: the ``error`` decision's
reason ends with ``(raised at acme_cp.py:197 in cp_form_batch)`` and its payload holds ``where`` and ``traceback``;
the daemon's warning is logged with the traceback. Later errors of the same plugin and hook cost nothing here.

The plugin's own code is the top-level package (or module) of the first frame below the core's hook callers
(`controlplane.hook_calls`, `controlplane.policy_calls`, pluggy): a helper it calls in numpy or the standard library
raising is placed at the plugin's line that called it, the traceback showing the rest.
"""

from __future__ import annotations

import os
import sys
import traceback
import types
from dataclasses import dataclass

#: The traceback kept: its innermost frames, then its last characters.
MAX_TRACEBACK_FRAMES = 20
MAX_TRACEBACK_CHARS = 4000

#: The modules that call hook implementations (their frames are above the plugin's in a traceback).
_CALLERS = ("controlplane.hook_calls", "controlplane.policy_calls")


@dataclass(frozen=True)
class ErrorOrigin:
    where: str  # "acme_cp.py:197 in cp_form_batch": file (under its sys.path entry), line, function
    traceback: str  # from the plugin's hook down, at most MAX_TRACEBACK_CHARS characters

    def as_payload(self) -> dict[str, str]:
        return {"where": self.where, "traceback": self.traceback}


def error_origin(exc: BaseException) -> ErrorOrigin | None:
    """Where ``exc`` was raised in the plugin's code; None for an error that was not raised in a hook (the core's
    check of a result: a wrong type, an unusable plan)."""
    tb = exc.__traceback__
    while tb is not None and _is_caller(tb.tb_frame):
        tb = tb.tb_next
    if tb is None:
        return None
    own = _package(tb.tb_frame)
    innermost, at = tb, tb
    while at is not None:
        if _package(at.tb_frame) == own:
            innermost = at
        at = at.tb_next
    code = innermost.tb_frame.f_code
    where = f"{shown_path(code.co_filename)}:{innermost.tb_lineno} in {code.co_name}"
    text = "".join(traceback.format_exception(type(exc), exc, tb, limit=-MAX_TRACEBACK_FRAMES))
    if len(text) > MAX_TRACEBACK_CHARS:
        head = "Traceback (most recent call last):\n"
        text = f"{head}  ... ({len(text) - MAX_TRACEBACK_CHARS:,} characters left out)\n{text[-MAX_TRACEBACK_CHARS:]}"
    return ErrorOrigin(where, text.rstrip("\n"))


def _module(frame: types.FrameType) -> str | None:
    name = frame.f_globals.get("__name__")
    return name if isinstance(name, str) else None


def _is_caller(frame: types.FrameType) -> bool:
    name = _module(frame)
    if name is None:  # (`policy_calls._picking_args`' generated callers: exec'd, no module)
        return frame.f_code.co_filename == "<string>"
    return name in _CALLERS or name == "pluggy" or name.startswith("pluggy.")


def _package(frame: types.FrameType) -> str:
    name = _module(frame)
    return name.split(".", 1)[0] if name else frame.f_code.co_filename


def shown_path(filename: str) -> str:
    """``filename`` under the longest `sys.path` entry holding it (``acme_cp.py``, ``plugins/routing.py``), else whole."""
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or os.curdir).rstrip(os.sep) + os.sep
        if filename.startswith(root) and len(root) > len(best):
            best = root
    return filename[len(best):] if best else filename
