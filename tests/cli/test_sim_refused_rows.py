"""`controlplane sim replay` of a trace that repeats request ids after their first requests
finished: the run is stored whole but for the repeats, which go to a refused file, and one
warning at the end names the ids and the file (the database refuses the repeats: unique key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.storage import iter_rows, make_engine, spill

pytestmark = pytest.mark.usefixtures("wide_consoles", "no_controlplane_env")


def _trace_repeating_ids(path: Path) -> Path:
    """39 requests, then ids 0 and 1 again, long after the first ones finished (the canonical format)."""
    lines = ["request_id,arrival_s,prompt_tokens,output_tokens"]
    lines += [f"{i},{i * 0.5:.3f},{100 + 7 * i},{8 + i % 5}" for i in range(39)]
    lines += ["0,100,176,13", "1,100.032,2672,8"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_repeated_request_ids_are_set_aside_with_one_warning(tmp_path: Path) -> None:
    trace = _trace_repeating_ids(tmp_path / "dup.csv")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = CliRunner().invoke(app, ["sim", "replay", str(trace), "--format", "canonical", "--db", db, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)  # complete run, nothing lost: a warning
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "the database refused 2 request row(s)" in warnings[0]
    assert "request ids must be unique within a run; the trace (or client) repeats id '0', '1'" in warnings[0]
    assert "could not be written" not in result.stderr and "replay_spill(" not in warnings[0]
    match = re.search(r"the refused rows are in (\S+controlplane-refused-run1-\S+\.jsonl)", warnings[0])
    assert match, warnings[0]
    refused = [(t, r["request_id"], r["arrival_s"]) for t, r in spill.read_spill(Path(match.group(1)))]
    assert refused == [("request", "0", 100.0), ("request", "1", 100.032)]
    engine = make_engine(db)
    try:
        stored = [r["request_id"] for r in iter_rows(engine, 1, "requests")]
    finally:
        engine.dispose()
    assert sorted(stored, key=int) == [str(i) for i in range(39)]
    shown = CliRunner().invoke(app, ["runs", "show", "1", "--db", db])
    assert shown.exit_code == 0 and "status=finished" in shown.stdout
