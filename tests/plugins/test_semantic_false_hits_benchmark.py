"""benchmarks/semantic_false_hits.py: repeats, then near-duplicates whose right answers are their own
(docs/caching.md cited a harness, semharness.py, that was not in the repository)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("semantic_false_hits", ROOT / "benchmarks" / "semantic_false_hits.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_repeats_are_exact_hits_and_no_near_duplicate_is_served_another_prompt_s_answer(capsys):
    assert bench.main(["--repeats", "120", "--paraphrases", "40", "--bounds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "near-dup. 1st served" in out and "wrong hits" in out
    summary = json.loads(out.strip().splitlines()[-1])
    row = summary["by_bound"]["0.05"]
    assert summary["wrong_hits"] == 0 and row["semantic_hits"] == 0 and row["duplicate_first_served"] == 0
    assert row["exact_hits"] == row["hits"] >= 120 - 20  # every repeat after each prompt's first


def test_every_prompt_and_near_duplicate_has_an_answer_of_its_own():
    assert len(bench.PAIRS) == 20 and len({bench.answer(d) for _, d in bench.PAIRS} | {bench.answer(p) for p, _ in
                                                                                          bench.PAIRS}) == 40


@pytest.mark.parametrize("bad", ["0", "1", "abc", ""])
def test_bad_bounds_are_one_line_naming_the_option(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--bounds", bad])
    assert exc.value.code == 2 and "argument --bounds" in capsys.readouterr().err
