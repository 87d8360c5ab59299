"""`controlplane sim replay` read without typer (controlplane/cli/replay_args.py): the same options as
the command typer makes, the same keyword arguments for every command line it reads, typer for the rest."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
import typer

from controlplane.cli import replay_args, sim

BENCHMARK = ["/data/workload.csv", "--format", "canonical", "--config", "/tmp/run.yaml", "--json", "--no-progress"]
READ = [
    [],
    ["t.csv"],
    BENCHMARK,
    BENCHMARK + ["--limit", "1000"],
    ["--limit", "1000", *BENCHMARK, "--exact"],
    ["t.csv", "--format=canonical", "-c", "run.yaml", "--db", "sqlite:///x.db", "--seed", "7", "--json", "--name", "n",
     "--window-start", "1.5", "--window-end", "10", "--speed-up", "2", "--repeat", "3", "--rate-scale", "0.5",
     "--limit", "100", "--qps", "1e1", "--arrival", "gamma", "--exact", "--until", "50", "--slo-ttft", "1",
     "--slo-tpot", "0.1", "--no-progress"],
    ["--no-exact", "--progress", "-f", "vidur", "x y.csv", "--config=c.toml"],
    ["--seed", " 3 ", "--limit", "1_000", "--qps", "nan", "--until", "inf", "--repeat", "1", "--name", "a=b"],
    ["--db=sqlite:///a=b.db", "--window-start", "0", "--speed-up", "0.5e-1"],
    ["--prompt-scale", "0.00887", "--output-scale", "2", "--max-prompt-tokens", "256"], ["--prompt-scale=nan"],
    ["t.csv", "--opt", "failed=drop", "--format", "burstgpt", "--opt=models=[\"GPT-4\"]", "--opt", "x"],
    ["--rate-profile", "0:1,14400:2", "--rate-scale", "0.5"], ["--rate-profile=0:x"],  # (the replay reads the text)
    ["--rate-scale", "3", "--copies", "shuffled"], ["--copies=spread"],  # (the transform checks the value)
]
LEFT_TO_TYPER = [
    ["--help"], ["a", "b"], ["--seed", "x"], ["--seed", "1.5"], ["--repeat", "0"], ["--seed", "-1"], ["--json=1"],
    ["--no-json"], ["--format", "a", "-f", "b"], ["--json", "--json"], ["--", "t.csv"], ["-fcanonical"],
    ["-f=canonical"], ["--bogus"], ["--limit"], ["--name", ""], [""], ["-"], ["--window_start", "1"],
    ["--format", "--json"], ["--exact", "--no-exact"], ["--install-completion"],
    ["--seed", "５"], ["--qps", "١.٥"], ["--repeat", "１"],  # digits int() and float() take, typer refuses
    ["--opt"], ["--opt", "-x=1"], ["--opt="],
    ["--rate-profile", "-60:1"], ["--rate-profile", "1:1", "--rate-profile=2:1"],
]


def _typer_command():
    """`replay` as the ``controlplane`` command line's app has it."""
    from controlplane.cli import build_app

    return typer.main.get_command(build_app(["sim"], subcommand="replay")).commands["sim"].commands["replay"]


def test_the_options_are_those_of_the_command_typer_makes():
    command = _typer_command()
    assert not command.context_settings  # (no options read from the environment)
    params = {p.name: p for p in command.params}
    trace = params.pop(replay_args.TRACE)
    assert trace.param_type_name == "argument" and trace.default is None and not trace.required
    assert trace.type_descriptor.annotation is Path and trace.nargs == 1 and not trace.multiple
    assert list(params) == [name for name, *_ in replay_args.PARAMETERS]  # the same, in the same order
    for name, names, kind, default, least in replay_args.PARAMETERS:
        p = params[name]
        multiple = kind == replay_args.MULTIPLE
        assert (p.opts, p.default, p.multiple, p.nargs, p.envvar, p.required, p.count, p.callback, p.is_eager) == (
            list(names), default, multiple, 1, None, False, False, None, False), name
        assert (p.min, p.max) == (least, None), name
        if kind in (replay_args.FLAG, replay_args.SWITCH):
            no = ["--no-" + names[0][2:]] if kind == replay_args.SWITCH else []
            assert p.is_flag and p.is_bool_flag and p.secondary_opts == no, name
            assert p.type_descriptor.annotation is bool, name
        elif multiple:
            assert not p.is_flag and p.secondary_opts == [] and p.type_descriptor.annotation == list[str], name
        else:
            assert not p.is_flag and p.secondary_opts == [] and p.type_descriptor.annotation is kind, name


def _captured(monkeypatch, call) -> tuple:
    seen: list = []
    monkeypatch.setattr(sim, "_early_writer", lambda: None)
    monkeypatch.setattr(sim, "_replay", lambda *args: seen.append(args))
    call()
    assert len(seen) == 1
    return tuple((type(v), str(v) if isinstance(v, float) and math.isnan(v) else v) for v in seen[0])


@pytest.mark.parametrize("args", READ, ids=lambda a: " ".join(a)[:60] or "none")
def test_a_command_line_it_reads_gives_what_typer_gives(monkeypatch, args):
    values = replay_args.parse(args)
    assert values is not None
    ours = _captured(monkeypatch, lambda: replay_args.run(sim.replay, values))
    theirs = _captured(monkeypatch, lambda: _typer_command().main(args=list(args), prog_name="controlplane sim replay",
                                                                   standalone_mode=False))
    assert ours == theirs


@pytest.mark.parametrize("args", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "empty")
def test_anything_else_is_left_to_typer(args):
    assert replay_args.parse(args) is None


@pytest.mark.parametrize("args", [["--seed", "５"], ["--qps", "١.٥"], ["--repeat", "１"]])
def test_typer_refuses_digits_other_than_ascii(args):
    with pytest.raises(typer.BadParameter):
        _typer_command().main(args=list(args), prog_name="controlplane sim replay", standalone_mode=False)


def test_a_shell_asking_for_completions_is_left_to_typer(monkeypatch):
    assert replay_args.parse(BENCHMARK) is not None
    monkeypatch.setenv("_CONTROLPLANE_COMPLETE", "bash_complete")
    assert replay_args.parse(BENCHMARK) is None


def _exit_code(exc: BaseException) -> object:
    def command(**values):
        raise exc

    with pytest.raises(SystemExit) as exited:
        replay_args.run(command, {})
    return exited.value.code


def test_exceptions_typer_handles_are_handled_as_typer_does(capsys):
    assert _exit_code(typer.Exit(2)) == 2
    assert _exit_code(KeyboardInterrupt()) == 130
    assert _exit_code(EOFError()) == 1
    assert "Aborted" in capsys.readouterr().err
    assert _exit_code(OSError(errno.EPIPE, "Broken pipe")) == 1
    assert _exit_code(typer.BadParameter("no good")) == 2
    assert "no good" in capsys.readouterr().err


def test_other_exceptions_are_raised_as_they_are():
    class Bug(Exception):
        pass

    def command(**values):
        raise Bug("here")

    with pytest.raises(Bug, match="here"):
        replay_args.run(command, {})
    with pytest.raises(OSError, match="other"):
        replay_args.run(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "other")), {})


@pytest.mark.parametrize(("args", "exact"), [([], True), (["--exact"], True), (["--no-exact"], False)])
def test_no_exact_overrides_a_config_s_exact_and_no_flag_leaves_it(tmp_path, monkeypatch, args, exact):
    """`--no-exact` was read as "not given": a config's `sim.exact: true` ran exact regardless."""
    import inspect

    from controlplane.config import load_config

    config = tmp_path / "run.yaml"
    config.write_text("sim: {exact: true}\n")
    at = list(inspect.signature(sim._replay).parameters).index("exact")
    ours = _captured(monkeypatch, lambda: replay_args.run(sim.replay, replay_args.parse(args)))
    theirs = _captured(monkeypatch, lambda: _typer_command().main(args=list(args), prog_name="controlplane sim replay",
                                                                   standalone_mode=False))
    assert ours[at] == theirs[at] == ((bool, exact) if args else (type(None), None))
    overrides = sim._overrides(None, None, None, ours[at][1], None, None, None)
    assert load_config(config, overrides).sim.exact is exact
    assert load_config(None, overrides).sim.exact is (exact if args else False)
