"""`controlplane runs export|report|plot -o` into a stream (``-``, ``/dev/stdout``, ``/dev/fd/N``), as a shell
runs them: written into the open stream where it stands, never over what the shell's redirection holds
(`controlplane.output_file.stream_of`)."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")
CONTROLPLANE = f"{shlex.quote(sys.executable)} -m controlplane.cli"


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("streams") / "runs.db"
    done = CliRunner().invoke(app, ["sim", "replay", "--limit", "30", "--db", f"sqlite:///{db}", "--json",
                                    "--no-progress"])
    assert done.exit_code == 0, done.output
    return str(db)


def _shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLPLANE_")}
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_export_to_dev_stdout_appended_to_a_file_keeps_what_the_file_held(one_run, tmp_path):
    """`-o /dev/stdout >> log.csv` replaced log.csv with the export (the link resolved to log.csv, written
    beside and renamed over it): its lines 'a' and 'b' were gone."""
    _shell(f"printf 'a\\nb\\n' > log.csv; {CONTROLPLANE} runs export 1 --db {shlex.quote(one_run)} "
           f"-o /dev/stdout -f csv >> log.csv", tmp_path)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[:2] == ["a", "b"]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[2:]))))
    assert len(rows) == 30 and rows[0]["request_id"] == "0" and "wrote" not in lines[-1]


def test_export_to_dev_stdout_inside_a_group_keeps_the_lines_around_it(one_run, tmp_path):
    _shell(f"{{ echo head; {CONTROLPLANE} runs export 1 --db {shlex.quote(one_run)} -o /dev/stdout -f jsonl; "
           f"echo foot; }} > log2.txt", tmp_path)
    lines = (tmp_path / "log2.txt").read_text().splitlines()
    assert lines[0] == "head" and lines[-1] == "foot"
    # (and no "wrote ..." line among them)
    assert [str(json.loads(line)["request_id"]) for line in lines[1:-1]] == [str(i) for i in range(30)]


def test_report_to_dev_stdout_appended_to_a_file_keeps_what_the_file_held(one_run, tmp_path):
    _shell(f"echo '<!-- before -->' > rep.html; {CONTROLPLANE} runs report 1 --db {shlex.quote(one_run)} "
           f"-o /dev/stdout >> rep.html", tmp_path)
    text = (tmp_path / "rep.html").read_text()
    assert text.startswith("<!-- before -->\n<!DOCTYPE html>") or text.startswith("<!-- before -->\n<")
    assert "wrote the report" not in text and text.rstrip().endswith("</html>")


def test_report_to_dash_writes_the_html_to_stdout_and_no_file_named_dash(one_run, tmp_path, monkeypatch):
    """`runs report 1 -o -` wrote a file named `-`."""
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["runs", "report", "1", "--db", one_run, "-o", "-"])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</html>")
    assert done.stderr.strip() == "wrote the report of run 1 to stdout"
    assert list(tmp_path.iterdir()) == []


def test_a_plot_s_format_is_its_extension_s_or_format_s_and_png_on_a_stream(tmp_path):
    """`runs plot -o /dev/stdout` said "no extension to tell the format by", and plot had no --format."""
    from controlplane.cli.runs_plot import plot_format

    assert plot_format(Path("-")) == plot_format(Path("/dev/stdout")) == "png"
    assert plot_format(Path("-"), "SVG") == "svg" and plot_format(tmp_path / "run", "pdf") == "pdf"
    assert plot_format(tmp_path / "run.svg", "svg") == plot_format(tmp_path / "run.svg") == "svg"
    with pytest.raises(ValueError, match="--format png draws PNG, but -o .*run.svg names SVG"):
        plot_format(tmp_path / "run.svg", "png")
    with pytest.raises(ValueError, match="--format: unknown picture format 'gif'"):
        plot_format(Path("-"), "gif")
    with pytest.raises(ValueError, match=r"no extension to tell the format by; .*or - for stdout"):
        plot_format(tmp_path / "run")


def test_export_to_dash_writes_the_rows_to_stdout_and_no_file_named_dash(one_run, tmp_path):
    """`runs export 1 -o -` said "it has no extension"; with --format csv it wrote a file named `-`."""
    done = _shell(f"{CONTROLPLANE} runs export 1 --db {shlex.quote(one_run)} -o - > rows.csv && "
                  f"{CONTROLPLANE} runs export 1 --db {shlex.quote(one_run)} -o - -f jsonl > rows.jsonl", tmp_path)
    assert done.stderr.splitlines() == ["wrote 30 rows to stdout"] * 2
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "rows.csv").read_text())))) == 30
    assert len([json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.jsonl"]


@pytest.mark.parametrize("options, magic", [([], b"\x89PNG"), (["--format", "svg"], b"<?xml"),
                                            (["-f", "pdf"], b"%PDF")])
def test_plot_to_dash_writes_the_picture_to_stdout(one_run, tmp_path, monkeypatch, options, magic):
    """`runs plot -o /dev/stdout` said "no extension to tell the format by", and plot had no --format."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["runs", "plot", "1", "--db", one_run, "-o", "-", *options])
    assert done.exit_code == 0, done.output
    assert done.stdout_bytes.startswith(magic) and done.stderr.startswith("wrote stdout (")
    assert list(tmp_path.iterdir()) == []


def test_plot_without_o_takes_its_default_name_from_format(one_run, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["runs", "plot", "1", "--db", one_run, "--format", "svg"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "run-1.svg").read_text().startswith("<?xml")
