"""Every command's help options and the version option (`controlplane.cli.build_app`)."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from controlplane import __version__
from controlplane.cli import build_app


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _commands(sub, (*path, name))
    return found


ROOT = typer.main.get_command(build_app())
COMMANDS = _commands(ROOT)


@pytest.mark.parametrize("option", ["--version", "-V"])
def test_the_version_option_prints_the_package_s_version(option):
    done = CliRunner().invoke(build_app(), [option])
    assert done.exit_code == 0 and done.stdout == f"controlplane {__version__}\n"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "controlplane")
def test_every_command_takes_dash_h_as_help(path):
    done = CliRunner().invoke(build_app(), [*path, "-h"], env={"COLUMNS": "100"})
    assert done.exit_code == 0, done.output
    assert "Usage: controlplane" in done.stdout and "-h" in done.stdout


def test_no_option_of_a_command_is_dash_h_or_dash_v():
    """``-h`` is help everywhere, ``-V`` the version (the root's): no command's own option takes either."""
    clashes = [(" ".join(path), p.name) for path, command in COMMANDS for p in command.params
               if {"-h", "-V"} & set(p.opts + p.secondary_opts) and p.name not in ("help", "version")]
    assert clashes == []
