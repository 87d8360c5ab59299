"""`controlplane sim replay`'s progress bar (`controlplane.cli.sim._progress_bar`): its total, and the drain
after the last arrival."""

from __future__ import annotations

from pathlib import Path

import pytest
import rich.progress

from controlplane.cli import sim
from sim.replay import TraceTransforms

_JSON_LINE = '{"request_id": "%d", "arrival_s": %d, "prompt_tokens": 10, "output_tokens": 2}\n'


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["m.ndjson", "m.json", "m.JSONL", "m.txt"])
def test_a_json_lines_file_has_no_header_whatever_its_extension(tmp_path, name):
    path = _write(tmp_path / name, "".join(_JSON_LINE % (i, i) for i in range(7)) + "\n")
    assert sim.count_rows(path) == 7


def test_a_quoted_field_s_line_breaks_are_inside_its_row(tmp_path):
    path = _write(tmp_path / "q.csv", 'request_id,arrival_s,prompt_tokens,output_tokens,prompt\n'
                                      '0,0,1,1,"two\nlines"\n\n1,1,1,1,"three\n\nlines"\n2,2,1,1,plain\n')
    assert sim.count_rows(path) == 3
    assert sim.count_rows(_write(tmp_path / "p.csv", "a,b,c\n1,2,3\n\n4,5,6\n")) == 2


def test_the_total_is_unknown_where_rows_are_left_out_or_arrivals_cut(tmp_path):
    path = _write(tmp_path / "m.jsonl", "".join(_JSON_LINE % (i, i) for i in range(10)))
    plain = TraceTransforms()
    assert sim.progress_total(path, plain, None) == 10
    assert sim.progress_total(path, TraceTransforms(repeat=3, limit=25), 25) == 25
    for options in ({"models": "GPT-4"}, {"log_types": "api"}, {"failed": "drop"}, {"on_error": "skip"}):
        assert sim.progress_total(path, plain, None, options) is None, options
    assert sim.progress_total(path, plain, None, {"failed": "keep", "qps": 2}) == 10
    assert sim.progress_total(path, plain, None, until=30.0) is None


@pytest.fixture
def bars(monkeypatch):
    """The progress bars `_progress_bar` makes."""
    made = []

    class Recorded(rich.progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(rich.progress, "Progress", Recorded)
    return made


@pytest.mark.parametrize("rows", [1000, 1024])
def test_the_clock_keeps_running_while_the_replay_drains(tmp_path, bars, rows):
    """The replay calls back every 256 arrivals, then on every tick with the last count while it
    drains: rich stops a task's clock once its count reaches its total, so the bar never gets there."""
    path = _write(tmp_path / "m.jsonl", "".join(_JSON_LINE % (i, i) for i in range(rows)))
    with sim._progress_bar(True, path, TraceTransforms(), None) as on_progress:
        task = bars[0].tasks[0]
        assert task.total == rows
        for n in range(256, rows + 1, 256):
            on_progress(n, n / 10)
            assert (task.total is None or task.completed < task.total) and not task.finished
        for tick in range(3):  # the drain
            on_progress(rows, rows / 10 + tick)
            assert not task.finished and task.total is None and task.description == "draining"
            assert task.fields["count"] == f"{rows:,} arrived" and task.fields["t"] == rows / 10 + tick
