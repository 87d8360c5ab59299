"""The `controlplane` command line (typer + rich).

Each command group lives in its own module and is imported only when it runs: ``controlplane
sim replay`` does not pay for the daemon's, the exports' or the profiler's imports (see
``COMMANDS``). ``controlplane --help`` (or anything not named there) builds the whole app.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

HELP = ("Simulation-backed control plane for LLM serving clusters: replay traces through pluggable "
        "policies, compare runs, serve live.")


def _group(module: str, attr: str = "app") -> Callable[[typer.Typer, str], None]:
    def add(app: typer.Typer, name: str) -> None:
        from importlib import import_module

        app.add_typer(getattr(import_module(f"controlplane.cli.{module}"), attr), name=name)

    return add


def _live(app: typer.Typer, name: str) -> None:
    from controlplane.cli import live

    app.add_typer(live.app)  # the top-level `controlplane daemon` command


def _live_replay(app: typer.Typer, name: str) -> None:
    from controlplane.cli.live_replay import live_replay

    app.command(name)(live_replay)


def _bench_command(app: typer.Typer, name: str) -> None:
    from controlplane.cli import bench

    app.command(name)(getattr(bench, name))


#: Top-level command name -> how to register it, in the order ``--help`` lists them.
COMMANDS: dict[str, Callable[[typer.Typer, str], None]] = {
    "sim": _group("sim"),
    "runs": _group("runs"),
    "plugins": _group("plugins"),
    "db": _group("db"),
    "keys": _group("keys"),
    "daemon": _live,
    "live-replay": _live_replay,
    "bench": _group("bench", "bench_app"),  # controlplane bench quant
    "profile": _bench_command,
    "calibrate": _bench_command,
}


#: Every command's help options (``-h`` too, as most tools take it); click's contexts pass them on to
#: each group's and command's own.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def _show_version(value: bool) -> None:
    """``--version`` / ``-V``: the package's version, then exit (before any command runs)."""
    if value:
        import typer

        from controlplane import __version__

        typer.echo(f"controlplane {__version__}")
        raise typer.Exit()


def _group_callback_with(typer: Any) -> Callable[..., None]:
    def _group_callback(
        version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_show_version,
                                     help="Print the version and exit."),
    ) -> None:
        pass

    return _group_callback


def _flags_without_type() -> None:
    """On/off flags show no type in ``--help`` (``--json``, not ``--json <bool>``). typer 0.2x's
    rich help panels take an option's type column from ``TyperOption.display_type_rich``, which
    names a flag's type too; typer's plain help line (``get_help_record``) and typers before the
    ``<type>`` style leave it out for flags and counters, as done here for every command (once per
    process; a typer without that method is left as it is)."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "skips_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich.skips_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def build_app(names: Iterable[str] | None = None, *, subcommand: str | None = None) -> typer.Typer:
    """The typer app with the commands ``names`` (default: all of ``COMMANDS``). With
    ``subcommand="replay"`` the ``sim`` group holds only ``replay``: typer makes every registered
    command's click parameters when the app runs, and the sweep's and search's are ~0.02 G
    instructions of each replay's start."""
    import typer  # (imported here: `main` forks a replay's writer process before it)

    _flags_without_type()
    from controlplane.cli import help_format

    help_format.install()  # (a terminal too narrow for typer's rich option panels: click's plain help)
    app = typer.Typer(name="controlplane", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                      context_settings=CONTEXT_SETTINGS)
    # A group even with one command registered (typer would make a lone command the whole app).
    app.callback()(_group_callback_with(typer))
    for name in COMMANDS if names is None else names:
        if name == "sim" and subcommand == "replay":
            from controlplane.cli import sim

            app.add_typer(sim.replay_group(), name=name)
        else:
            COMMANDS[name](app, name)
    return app


def _command_name(argv: list[str]) -> str | None:
    """The top-level command ``argv`` runs, when it is one of ``COMMANDS`` (else None)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS and argv and argv[0] == first else None


def _subcommand(argv: list[str]) -> str | None:
    """The word after the top-level command (``replay`` in ``sim replay ...``), if any."""
    words = [a for a in argv[:2] if not a.startswith("-")]
    return words[1] if len(words) == 2 else None


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole app, built on first use (tests, `from controlplane.cli import app`)
        global _full_app
        if _full_app is None:
            _full_app = build_app()
        return _full_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_built(collecting: bool) -> None:
    """The command's app is built and what the process imported so far stays: freeze it
    (``gc.freeze``: no later collection walks it), then let the collector run again if it did."""
    import gc

    from controlplane import gc_freeze
    from controlplane.cli import common

    common.freeze_after_pause = True  # this process is the command: what it imports later stays too
    if collecting:
        gc_freeze.freeze()
        gc.enable()


def _skip_pydantic_plugin_scan() -> None:
    """Tell pydantic (``PYDANTIC_DISABLE_PLUGINS``, its documented switch) that no pydantic plugin
    is installed when plugin discovery's cache says so for the distributions installed now: its
    first model would otherwise read every distribution's entry points (~20 M instructions of a
    replay's start). Before pydantic is imported; the signature computed here is the one plugin
    discovery then uses (`entry_point_cache.keep_signature`), so the check adds nothing. A value the
    environment already holds is left as it is."""
    import os

    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        return
    from controlplane import entry_point_cache

    if entry_point_cache.no_pydantic_plugins():
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"


def _plain_replay() -> Callable[[], None] | None:
    """``controlplane sim replay`` with a plain command line, to run without typer (importing it
    and making the command were ~0.1 G instructions of each replay's start); None when typer
    should read the command line (`controlplane.cli.replay_args`)."""
    from controlplane.cli import replay_args

    values = replay_args.parse(sys.argv[3:])  # (after `sim replay`)
    if values is None:
        return None
    from controlplane.cli import sim

    return lambda: replay_args.run(sim.replay, values)


def main() -> None:
    """The `controlplane` entry point: only the command that runs is imported, and the process
    ends as soon as its output is flushed and the exit handlers ran (``os._exit``: the
    interpreter's teardown of a few hundred modules is a tenth of a second or more that
    nothing needs; files and the database were closed by the command)."""
    import gc

    # Paused until the command's app is built (`_app_built`): the CLI's imports, the writer's
    # fork and typer's make only long-lived objects, and every collection there walks them.
    collecting = gc.isenabled()
    gc.disable()
    import atexit
    import contextlib
    import os
    import threading

    from controlplane import timings
    from controlplane.cli import pipes

    timings.mark("main")
    with contextlib.suppress(AttributeError, ValueError):  # (diagnostics in any encoding: a name escaped, not a crash)
        sys.stderr.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    early = None
    try:
        name = _command_name(sys.argv[1:])
        subcommand = _subcommand(sys.argv[1:]) if name is not None else None
        if name == "sim":
            # Before anything makes a dataclass: the functions the standard library compiles from
            # text at every start (a fifth of a short replay's instructions) come from the cache
            # directory (the simulator's commands, whose start is most of a short run).
            from controlplane import code_cache

            code_cache.install(f"{name} {subcommand or ''}")
            # The simulator does no multi-threaded linear algebra; numpy's OpenBLAS would start a
            # thread per core at import (CPU and wall on a busy host, for nothing). Set before
            # numpy is imported; an explicit setting wins.
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
            if subcommand == "replay":
                # Its writer process, forked before the command's imports: it imports the database
                # side and opens the database while this process imports the simulator.
                from controlplane.storage import early

                early.start_for_command()
                _skip_pydantic_plugin_scan()
        try:
            app = _plain_replay() if subcommand == "replay" and name == "sim" else None
            if app is None:
                app = build_app([name], subcommand=subcommand) if name is not None else __getattr__("app")
        finally:
            _app_built(collecting)
        app()
        code: Any = 0
    except SystemExit as exc:
        code = 0 if pipes.closed_pipe_exit(exc) else exc.code
    except UnicodeEncodeError as exc:  # stdout's encoding (PYTHONIOENCODING=ascii, a C locale) cannot write a name
        print(f"error: {exc.object[exc.start:exc.end]!r} cannot be written in the output's encoding ({exc.encoding}); "
              "set PYTHONIOENCODING=utf-8 (or a UTF-8 locale), or ask for --json or -o FILE", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:  # Ctrl-C before the command ran (its imports): one word, no traceback
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        if early is not None and (unused := early.take_started()) is not None:
            unused.discard()  # the command did not run a replay (--help, a usage error, an interrupt)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # under a profiler or debugger: let it write its results
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # a thread the interpreter would wait for: the normal exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: leave it to the normal exit
        sys.exit(code)
    atexit._run_exitfuncs()
    os._exit(code)
