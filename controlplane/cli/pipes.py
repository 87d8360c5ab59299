"""A command whose stdout's reader went away (``controlplane runs export 1 | head``) ends quietly, exit 0.

Left alone, click ends such a command with exit status 1 (``except OSError: ... sys.exit(1)``), and rich's
console does the same for what it prints (``Console.on_broken_pipe``): a script with ``set -o pipefail``,
or one reading ``${PIPESTATUS[0]}``, took it for a failure. The reader closing the pipe is what it asked
for (``head`` read its lines), as ``grep`` or ``cat`` end there: nothing on stderr, exit 0.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

__all__ = ["closed_pipe_exit", "quiet_on_closed_pipe", "reader_gone"]

F = TypeVar("F", bound=Callable[..., Any])


def reader_gone() -> NoReturn:
    """stdout's reader closed the pipe: what is still buffered, and any later write (the flush at exit),
    goes to /dev/null, and the command ends with exit status 0."""
    import typer

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # (a stdout without a file descriptor: a test's runner)
        pass
    raise typer.Exit(0)


def closed_pipe_exit(exc: SystemExit) -> bool:
    """Whether ``exc`` is rich's or click's exit status 1 for a closed stdout (raised while handling the
    ``BrokenPipeError``: ``controlplane --help | head``, ``controlplane sim replay --help | head``), which
    the entry point turns into exit 0 as for every other command's output.

    A closed pipe met while an error was being shown (a usage error's text into ``2>&1 | head``) keeps
    its failure: the command did not do what it was asked.
    """
    cause = exc.__context__
    return exc.code == 1 and isinstance(cause, BrokenPipeError) and cause.__context__ is None


def _pipe_error() -> NoReturn:
    """Rich's console, on a closed pipe (called in its ``except BrokenPipeError``): the same as a write's."""
    reader_gone()


def quiet_on_closed_pipe(command: F) -> F:
    """``command`` (a typer command) ending quietly, exit 0, when its stdout's reader goes away."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from controlplane.cli import common

        out = common.console("out")
        before = out.__dict__.get("on_broken_pipe")
        out.on_broken_pipe = _pipe_error  # (rich's own: SystemExit(1))
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            reader_gone()
        finally:
            if before is None:
                out.__dict__.pop("on_broken_pipe", None)
            else:
                out.on_broken_pipe = before

    return wrapper  # type: ignore[return-value]
