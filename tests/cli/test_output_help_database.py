"""`runs export -h`, `runs plot -h` and `runs report -h`: their -o help ended "...; the database read is refused.",
which read as if reading the database were refused. It says what is refused: an -o naming the database being read."""

from __future__ import annotations

import pytest
import typer.main

from controlplane.cli import app


@pytest.mark.parametrize("command", ["export", "plot", "report"])
def test_the_output_option_says_which_file_is_refused(command):
    runs = typer.main.get_command(app).commands["runs"]
    (option,) = [p for p in runs.commands[command].params if "-o" in p.opts]
    assert option.help.endswith("; an -o naming the database being read (--db) is refused."), option.help
    assert "the database read is refused" not in option.help
