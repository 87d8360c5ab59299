"""`controlplane sim replay`'s progress bar (`controlplane.cli.replay_progress`): its total, and the drain
after the last arrival."""

from __future__ import annotations

from pathlib import Path

import pytest
import rich.progress

from controlplane.cli import replay_progress as sim
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
    """The progress bars `progress_bar` makes."""
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
    with sim.progress_bar(path, TraceTransforms(), None) as on_progress:
        task = bars[0].tasks[0]
        assert task.total == rows
        for n in range(256, rows + 1, 256):
            on_progress(n, n / 10)
            assert (task.total is None or task.completed < task.total) and not task.finished
        for tick in range(3):  # the drain
            on_progress(rows, rows / 10 + tick)
            assert not task.finished and task.total is None and task.description == "draining"
            assert task.fields["count"] == f"{rows:,} arrived" and task.fields["t"] == rows / 10 + tick


def _replay_under_the_bar(bars, path, **transforms):
    """Replay ``path`` with the bar's callback as `controlplane sim replay` does, recording what the bar says at
    each call: (description, count, total)."""
    from controlplane.testing import make_config
    from sim.replay import replay

    seen = []
    with sim.progress_bar(path, TraceTransforms(**transforms), transforms.get("limit")) as on_progress:
        task = bars[0].tasks[0]

        class Watched:
            def __call__(self, n, t):
                on_progress(n, t)
                seen.append((task.description, task.fields["count"], task.total))

            def trace_ended(self, n, t):
                on_progress.trace_ended(n, t)
                seen.append(("ended", n, None))

        replay(str(path), make_config(storage={"url": f"sqlite:///{path.parent / 'runs.db'}"}),
               transforms=TraceTransforms(**transforms), on_progress=Watched())
    return seen


@pytest.mark.parametrize("transforms", [{}, {"window_end_s": 1000.0}], ids=["total known", "total unknown"])
def test_the_bar_says_replay_until_the_last_arrival_and_draining_only_after(tmp_path, bars, transforms):
    """It said "draining" from the first simulated minute (the driver calls back every minute too, with a count not
    a multiple of 256) and lost the /total: now the replay says when its trace has ended."""
    rows = 700  # (one request a second: 11 simulated minutes of arrivals, and counts of 256 and 512 among them)
    path = _write(tmp_path / "m.jsonl", "".join(_JSON_LINE % (i, i) for i in range(rows)))
    seen = _replay_under_the_bar(bars, path, **transforms)
    end = seen.index(("ended", rows, None))
    before, after = seen[:end], seen[end + 1:]
    assert len(before) > 11 and after  # (each minute and each 256 arrivals, then the drain's ticks)
    assert all(description == "replay" for description, _, _ in before), before
    if transforms:  # (a window: no total known, a count alone)
        assert all(total is None and "/" not in count for _, count, total in before)
    else:
        assert all(count.endswith(f"/{rows}") and total == rows for _, count, total in before), before
    assert all(d == "draining" and c == f"{rows} arrived" and total is None for d, c, total in after), after
