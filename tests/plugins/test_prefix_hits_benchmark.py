"""benchmarks/prefix_hits.py: a bad option is one line naming it; the table keeps its width in a pipe."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.benchmarks import ROOT, load_benchmark, never_called, refusal

bench = load_benchmark("prefix_hits")


@pytest.mark.parametrize(("argv", "option"), [
    (["--limit", "0"], "--limit"),  # (was a ZeroDivisionError in offline_ratio)
    (["--limit", "50", "--replicas", "0"], "--replicas"),  # (TypeError formatting None)
    (["--max-imbalance", "-1"], "--max-imbalance"),  # (a SettingsError naming the plugin's setting)
    (["--trace", "/nonexistent/trace.jsonl"], "--trace"),  # (FileNotFoundError traceback)
    (["--trace", str(ROOT / "README.md")], "--trace"),  # not a Mooncake trace
])
def test_a_bad_option_is_one_line_naming_it(argv, option, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", never_called)
    assert option in refusal(bench, argv, capsys)


def test_the_table_is_not_cut_to_80_columns_in_a_pipe(tmp_path, capsys, monkeypatch):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 1000 * i, "input_length": 1000, "output_length": 10,
                                         "hash_ids": [0, 1]}) + "\n" for i in range(4)))
    monkeypatch.setattr(bench, "run", lambda *a: ({"prefix_token_hit_ratio": 0.5, "prefix_hits": 3,
                                                   "ttft_p50_s": 0.1, "ttft_p99_s": 0.2}, 0.0))
    assert bench.main(["--trace", str(trace), "--replicas", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("one infinite cache for all, filled at arrival" in line for line in out)  # one line, not wrapped
    assert json.loads(out[-1])["least-loaded/free_kv"] == 0.5


def test_a_missing_default_trace_says_where_to_get_it_and_what_to_pass(tmp_path, capsys, monkeypatch):
    """(A clone has no ../shared: the error named only the missing path.)"""
    monkeypatch.setattr(bench, "DEFAULT_TRACE", tmp_path / "shared" / "conversation_trace.jsonl")
    monkeypatch.setattr(bench, "run", never_called)
    line = refusal(bench, [], capsys)
    assert "github.com/kvcache-ai/Mooncake" in line and "give --trace PATH" in line
