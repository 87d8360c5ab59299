"""The writer process's heap trim: free pages go back to the system, and the writer trims as it goes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controlplane.storage import heap, writer_process
from controlplane.storage.early import EarlyWriter, FrontRecorder

from .support import FINISHED, decision_row, start_run


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
def test_trimming_returns_the_free_pages_that_free_left_resident():
    release = heap.heap_trimmer()
    assert release is not heap._no_op  # glibc here
    blocks = [bytes(1000) for _ in range(200_000)]  # ~200 MB from malloc (above pymalloc's 512 bytes)
    kept = blocks[::50]  # one in fifty stays: the free pages between them cannot shrink the heap's top
    del blocks
    before = _rss_kb()
    release()
    after = _rss_kb()
    assert before - after > 100_000, (before, after)  # over 100 of the ~196 MB freed
    assert len(kept) == 4_000


def test_the_writer_process_trims_every_few_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "trims"

    def counting_trimmer():  # runs in the forked writer: it counts in a file
        return lambda: log.open("a").write("trim\n")

    monkeypatch.setattr(writer_process, "heap_trimmer", counting_trimmer)
    rec = FrontRecorder(EarlyWriter(), f"sqlite:///{tmp_path / 'w.db'}", batch_size=10)
    run_id = start_run(rec)
    for i in range(10 * writer_process.TRIM_EVERY * 3):  # 3 x TRIM_EVERY batches of 10 rows
        rec.add_decision(decision_row(i))
    rec.finish_run(run_id, status="finished", summary={"n": 1}, finished_at=FINISHED, wall_s=1.0, sim_end_s=1.0)
    rec.close()
    assert log.read_text().count("trim") == 3
