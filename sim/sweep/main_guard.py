"""The pool backend from a script without ``if __name__ == "__main__":``: said before anything runs.

The pool's worker processes (forkserver) import the main module again, as spawn's do: a script that starts a
sweep at its top level starts it again in each worker, which multiprocessing stops with its bootstrapping
``RuntimeError``, and the driver then sees ``BrokenProcessPool`` (the sweep stored failed). `check_main_guard`
finds that case in the driver, before the database is touched: the line of the main module that called, on the
stack, in a top-level statement that is not an ``if __name__ == "__main__":`` block; `in_reimported_main` finds it
in a worker (a case the first missed), where the sweep is refused at once, with the same words.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys
from types import FrameType

__all__ = ["MainGuardError", "check_main_guard", "in_reimported_main"]


class MainGuardError(RuntimeError):
    """A pool sweep started by a script's top-level code, which each worker process would run again."""


_FIX = ("put the script's code under `if __name__ == \"__main__\":` (docs/sweeps.md, 'From Python'), or use "
        "backend=\"serial\"")


def _message(path: str, line: int) -> str:
    return (f"the pool backend's worker processes import the main module again, and line {line} of {path}, which "
            f"starts this sweep, is not under `if __name__ == \"__main__\":`, so each of them would start it again: "
            + _FIX)


def in_reimported_main() -> None:
    """`MainGuardError` in a worker process importing the main module (multiprocessing's bootstrapping phase)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "__main__"
        raise MainGuardError(f"this process is a pool worker importing the main module ({main}) again, whose "
                             f"top-level code starts a sweep: {_FIX}")


def check_main_guard(frame: FrameType | None = None) -> None:
    """`MainGuardError` when the main module is a file that the pool's workers import again and this call comes
    from one of its top-level statements that is not a ``__main__`` guard (a function the script calls from its
    top level counts as that statement); nothing otherwise (an interactive session, ``python -c``, a package's
    ``__main__``, a console script: each guarded or never imported again)."""
    in_reimported_main()
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or path is None or (spec_name or "").endswith("__main__") or \
            os.path.splitext(os.path.basename(path))[0] == "ipython":  # (what multiprocessing does not import again)
        return
    frame = frame or sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return  # (not called from the main module's top level: a thread, an atexit handler)
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            if not _main_guard(stmt):
                raise MainGuardError(_message(path, line))
            return


def _main_guard(stmt: ast.stmt) -> bool:
    """Whether ``stmt`` is ``if __name__ == "__main__":`` (or ``"__main__" == __name__``)."""
    test = stmt.test if isinstance(stmt, ast.If) else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = (test.left, test.comparators[0])
    return (any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides)
            and any(isinstance(n, ast.Constant) and n.value == "__main__" for n in sides))
