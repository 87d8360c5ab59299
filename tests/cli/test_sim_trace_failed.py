"""`controlplane sim replay` of a trace that fails mid-replay: the summary of what it stored, the run that holds
the requests replayed before the error and how to see them, then the error (exit 2); and of a trace that is no
regular file (a pipe), said so before anything reads it."""

from __future__ import annotations

from typer.testing import CliRunner

from controlplane.cli import app

HEADER = "request_id,arrival_s,prompt_tokens,output_tokens\n"
GOOD = "".join(f"r{i},{i * 0.1:.1f},100,10\n" for i in range(50))


def test_the_cli_says_which_run_holds_the_requests_and_how_to_see_them(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + GOOD + "bad,5.0,abc,10\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "replay", str(path), "--db", db, "--json"])
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "the trace failed at simulated second 5: run 1 is stored with status 'failed' and the 50 requests" in text
    assert f"(`controlplane runs show 1 --db {db}`); the error:" in text and "error: " in text
    assert '"num_requests": 50' in result.stdout and '"error": "TraceFormatError: ' in result.stdout
    assert '"status": "failed"' in result.stdout  # (a gate reading the JSON alone sees it did not finish)


def test_a_pipe_given_as_the_trace_is_one_line_before_anything_reads_it(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # (nothing writes it: the progress bar's row count, or a reader, would wait for ever)
    result = CliRunner().invoke(app, ["sim", "replay", str(fifo), "--db", f"sqlite:///{tmp_path / 'runs.db'}"])
    assert result.exit_code == 2
    assert f"error: trace {fifo} is not a regular file but a pipe" in " ".join(result.stderr.split())
