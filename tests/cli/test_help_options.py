"""Every command's help options and the version option (`controlplane.cli.build_app`)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from controlplane import __version__
from controlplane.cli import build_app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
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


def _help(path: tuple[str, ...], columns: int) -> str:
    done = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": str(columns)})
    assert done.exit_code == 0, done.output
    return done.stdout


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("path, command", COMMANDS, ids=lambda p: " ".join(p) if isinstance(p, tuple) else "")
def test_no_option_name_or_type_is_cut_in_the_terminal_s_width(path, command, columns):
    """At 80 columns `sim replay --help` cut --max-prompt-tokens to '--max-prompt-tok…', its metavar
    'clumped|shuffled|shifted' and the defaults in the help texts ('$CONTROLPLANE_STO…')."""
    import re

    text = _help(path, columns)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= columns
    ctx = command.context_class(command, info_name=path[-1] if path else "controlplane")
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or param.param_type_name != "option":  # (typer's own click: not `click`)
            continue
        for name in (*param.opts, *param.secondary_opts):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
        metavar = param.metavar or ""
        assert metavar in text, (metavar, text)


@pytest.mark.parametrize("path, phrase", [(("runs",), "requests, completed"), (("runs", "list"), "requests, completed"),
                                          (("plugins", "list"), "or that every run would")], ids=str)
def test_a_docstring_s_sentences_are_not_broken_where_its_source_lines_end(path, phrase):
    """typer's rich help kept the docstring's line breaks: 'A crashed run's requests,' ended a line of `runs
    --help` and 'completed and e2e p50' began the next, however wide the terminal."""
    assert any(phrase in line for line in _help(path, 200).splitlines())


def test_the_db_option_names_config_only_where_the_command_takes_one():
    """`runs list --help` said --db's default came from 'storage.url of --config', an option it lacks."""
    wrong = []
    for path, command in COMMANDS:
        options = {name for p in command.params for name in p.opts}
        for p in command.params:
            if "--db" in p.opts and "--config" in (p.help or "") and "--config" not in options:
                wrong.append(" ".join(path))
    assert wrong == []


def test_the_commands_docs_schema_names_as_writing_files_exist_with_those_options():
    """docs/schema.md named `bench calibrate -o FILE`: the command is `controlplane calibrate`."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text(encoding="utf-8")
    paragraph = " ".join(text[text.index("A file these commands write"):].split("\n\n")[0].split())
    named = re.findall(r"`([a-z][a-z -]*?) (-{1,2}[a-z-]+) FILE`", paragraph)
    assert len(named) >= 6, paragraph
    by_path = {" ".join(path): command for path, command in COMMANDS}
    for words, option in named:
        assert words in by_path, (words, option)
        assert any(option in p.opts for p in by_path[words].params), (words, option)


@pytest.mark.parametrize("long, short", [("--config", "-c"), ("--format", "-f"), ("--output", "-o")])
def test_an_option_has_the_same_short_name_in_every_command(long, short):
    """`profile` took --config without -c and `runs export` --format without -f, as other commands take them."""
    missing = [" ".join(path) for path, command in COMMANDS for p in command.params
               if long in p.opts and short not in p.opts]
    assert missing == []


def test_json_is_a_flag_in_every_command():
    """`bench quant --json PATH` took a path where every other command's --json is a flag (JSON on stdout); its
    file is --json-out / -o now (--json PATH still read, hidden)."""
    taking = [" ".join(path) for path, command in COMMANDS for p in command.params
              if "--json" in p.opts and not getattr(p, "is_flag", False) and not p.hidden]
    assert taking == []


@pytest.mark.parametrize("path, options", [
    (("sim", "replay"), ("--seed", "--slo-ttft", "--slo-tpot", "--qps", "--arrival", "--until", "--limit")),
    (("live-replay",), ("--workers",))], ids=str)
def test_a_replay_s_options_that_take_the_config_s_value_say_so(path, options):
    """sim replay's --seed, --slo-ttft, --slo-tpot, --qps, --arrival, --until and --limit and live-replay's
    --workers said nothing of what they are when not given."""
    command = dict(COMMANDS)[path]
    silent = [p.opts[0] for p in command.params if p.opts[0] in options and "default" not in (p.help or "").lower()]
    assert silent == [] and len({p.opts[0] for p in command.params} & set(options)) == len(options)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "controlplane")
def test_a_usage_line_names_its_arguments_plainly(path):
    """`db load-spill --help` said `{<path>}` and `calibrate --help` `{RUN...}...`."""
    usage = next(line for line in _help(path, 200).splitlines() if "Usage:" in line)
    assert "{<" not in usage and "...}" not in usage, usage


@pytest.mark.parametrize("path", [("sim", "sweep"), ("sim", "search")], ids=" ".join)
def test_a_spec_argument_is_named_in_capitals_as_the_other_metavars(path):
    """`sim search -h` read `Usage: ... [OPTIONS] {spec}`: the argument had no metavar, so typer named it by its
    parameter (the check above looks only for `{<` and `...}`)."""
    usage = next(line for line in _help(path, 200).splitlines() if "Usage:" in line)
    assert "SPEC" in usage and "spec" not in usage, usage


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "controlplane")
def test_a_usage_line_names_its_arguments_in_capitals(path):
    """`runs show --help` said `{run_id}`, `sim search` `{spec}`, `plugins show` `{name}`: a parameter's name, not
    the placeholder the docs use (RUN, SPEC, NAME)."""
    import re

    usage = next(line for line in _help(path, 200).splitlines() if "Usage:" in line)
    assert not re.findall(r"[\[{][a-z_]+[\]}]", usage), usage


def test_an_option_s_default_follows_its_help_on_the_same_flow():
    """typer set an option's help and its default side by side as columns: after a help of two lines,
    `[default: small]` stood alone on the next line of `profile --help`."""
    lines = _help(("profile",), 160).splitlines()
    at = next(i for i, line in enumerate(lines) if "[default: small]" in line)
    assert "no trace). [default: small]" in lines[at], lines[at - 1:at + 1]
