"""`controlplane sim replay`'s command line read without typer, for the plain command lines.

Importing typer and making the click command from `controlplane.cli.sim.replay`'s signature were
~0.1 G instructions of every replay's start (docs/history/simulator.md). :func:`parse` reads the
command lines made only of the options below, each given once (``--opt`` may be repeated),
spelled out (``--name value``, ``--name=value``, ``-f value``) with a value that does not start
with ``-``, and at most one trace path, and gives `replay`'s keyword arguments as typer would:
the same conversions (``int``,
``float``, ``str``, ``Path``, flags), the same defaults. Anything else (``--help``, an unknown or
repeated option, a value typer would refuse, shell completion) gives ``None``, and the command goes
through typer as before. :data:`PARAMETERS` mirrors `replay`'s signature:
``tests/cli/test_replay_args.py`` compares it with the click command typer makes, and the keyword
arguments :func:`parse` gives with those typer passes, command line by command line. :func:`run`
calls the command; an exception typer handles itself (its ``Exit``, an interrupt, a closed pipe)
is handed to typer to handle the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["PARAMETERS", "parse", "run"]

#: A flag without a ``--no-`` form, a boolean option with one (``--exact/--no-exact``), and a
#: text option that may be repeated (``--opt a=1 --opt b=2``: a list, None when not given).
FLAG: Final = "flag"
SWITCH: Final = "switch"
MULTIPLE: Final = "multiple"

#: `replay`'s options in its signature's order: (parameter, option names, kind, default, least
#: value); kind is a type its value is converted with, or FLAG / SWITCH. The trace is positional.
PARAMETERS: Final[tuple[tuple[str, tuple[str, ...], Any, Any, int | None], ...]] = (
    ("format", ("--format", "-f"), str, None, None),
    ("db", ("--db",), str, None, None),
    ("seed", ("--seed",), int, None, None),
    ("config", ("--config", "-c"), Path, None, None),
    ("json_out", ("--json",), FLAG, False, None),
    ("name", ("--name",), str, None, None),
    ("window_start", ("--window-start",), float, None, None),
    ("window_end", ("--window-end",), float, None, None),
    ("speed_up", ("--speed-up",), float, None, None),
    ("repeat", ("--repeat",), int, None, 1),
    ("rate_scale", ("--rate-scale",), float, None, None),
    ("rate_profile", ("--rate-profile",), str, None, None),
    ("copies", ("--copies",), str, None, None),
    ("limit", ("--limit",), int, None, 1),
    ("prompt_scale", ("--prompt-scale",), float, None, None),
    ("output_scale", ("--output-scale",), float, None, None),
    ("max_prompt_tokens", ("--max-prompt-tokens",), int, None, 1),
    ("max_output_tokens", ("--max-output-tokens",), int, None, 1),
    ("qps", ("--qps",), float, None, None),
    ("arrival", ("--arrival",), str, None, None),
    ("opt", ("--opt",), MULTIPLE, None, None),
    ("exact", ("--exact",), SWITCH, None, None),
    ("until", ("--until",), float, None, None),
    ("slo_ttft", ("--slo-ttft",), float, None, None),
    ("slo_tpot", ("--slo-tpot",), float, None, None),
    ("progress", ("--progress",), SWITCH, True, None),
)
TRACE: Final = "trace"  # the positional argument (a Path, default None)

_BY_NAME: dict[str, tuple[str, Any, Any]] = {}  # option spelling -> (parameter, kind, value for a flag)
for _parameter, _names, _kind, _default, _least in PARAMETERS:
    for _name in _names:
        _BY_NAME[_name] = (_parameter, _kind, True)
    if _kind == SWITCH:
        _BY_NAME["--no-" + _names[0][2:]] = (_parameter, _kind, False)
_LEAST = {parameter: least for parameter, _, _, _, least in PARAMETERS if least is not None}


def parse(args: Sequence[str]) -> dict[str, Any] | None:
    """`replay`'s keyword arguments for ``args`` (what follows ``sim replay``), or None when typer
    should read them."""
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return None  # a shell asks for completions: typer answers
    values: dict[str, Any] = {TRACE: None, **{p: default for p, _, _, default, _ in PARAMETERS}}
    given: set[str] = set()
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            if TRACE in given or not token:
                return None
            given.add(TRACE)
            values[TRACE] = Path(token)
            continue
        name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        found = _BY_NAME.get(name)
        if found is None:
            return None
        parameter, kind, flag_value = found
        if parameter in given and kind != MULTIPLE:
            return None
        given.add(parameter)
        if kind == FLAG or kind == SWITCH:
            if eq:
                return None
            values[parameter] = flag_value
            continue
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or value.startswith("-") or (kind is int or kind is float) and not value.isascii():
            return None  # (typer's numbers are pydantic's, which take ASCII digits only: not "５" as int() does)
        if kind == MULTIPLE:
            values[parameter] = [*(values[parameter] or ()), value]
            continue
        try:
            converted = kind(value)
        except ValueError:
            return None
        least = _LEAST.get(parameter)
        if least is not None and converted < least:
            return None
        values[parameter] = converted
    return values


def run(command: Callable[..., Any], values: dict[str, Any]) -> None:
    """``command(**values)``; an exception typer's command runner handles itself (its ``Exit``,
    a click error, an end of input, an interrupt, a closed pipe) is handled by it, the same way."""
    try:
        command(**values)
    except Exception as exc:  # (KeyboardInterrupt too, below: typer makes it exit 130)
        if not _typers(exc):
            raise
        _handled_by_typer(exc)
    except KeyboardInterrupt as exc:
        _handled_by_typer(exc)


def _typers(exc: BaseException) -> bool:
    import errno

    module = type(exc).__module__
    return (module.split(".")[0] in ("typer", "click") or isinstance(exc, EOFError)
            or (isinstance(exc, OSError) and exc.errno == errno.EPIPE))


def _handled_by_typer(exc: BaseException) -> None:
    """Raise ``exc`` from a command run by typer's runner, which turns it into what the command
    would have done under typer (a message, ``SystemExit``)."""
    from typer.core import TyperCommand

    def rethrow() -> None:
        raise exc

    TyperCommand(name="replay", callback=rethrow).main(args=[], prog_name="controlplane sim replay")
