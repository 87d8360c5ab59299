"""benchmarks/live_throughput.py: one tiny run of every part, the batched one through a real daemon."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("live_throughput_bench", ROOT / "benchmarks" / "live_throughput.py")
B = importlib.util.module_from_spec(_spec)
sys.modules["live_throughput_bench"] = B
_spec.loader.exec_module(B)

TINY = ["--preset", "tiny-llama", "--layers", "1", "--requests", "4", "--sequential", "1", "--prompt-tokens", "4",
        "--max-tokens", "4", "--quant-repeats", "1", "--daemon-requests", "2", "--daemon-max-tokens", "2",
        "--concurrency", "2"]


def test_a_tiny_run_serves_the_batched_requests_through_the_daemon(capsys):
    result = B.main(TINY)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert result["batched_path"] == "daemon" and result["daemon_batched_rps"] > 0
    ratio = result["daemon_batched_rps"] / result["sequential_rps"]
    assert abs(result["batched_over_sequential"] / ratio - 1) < 0.01  # the daemon's figure, not the driver's
    assert result["driver_batched_over_sequential"] > 0 and math.isfinite(result["int8_over_fp32_bs32"])
    assert result["daemon"]["daemon_c2_rps"] > 0


def test_without_the_daemon_the_ratio_is_the_in_process_drivers(capsys):
    result = B.main([*TINY, "--skip-daemon"])
    assert result["batched_path"] == "driver" and result["daemon_batched_rps"] is None
    assert result["batched_over_sequential"] == result["driver_batched_over_sequential"]
    assert "daemon" not in result


def test_the_concurrent_row_sends_more_than_four_requests_a_client_and_says_so(capsys):
    """(c)'s concurrent row sent the --daemon-requests prompts repeated (80 of 20: 4x) while --help
    said only "requests sent"."""
    assert [len(B.concurrent_load([[1]] * n, 16)) for n in (40, 20, 64, 100)] == [80, 80, 128, 100]
    assert B.concurrent_repeats(20, 16) == 4
    try:
        B.main(["--help"])
    except SystemExit:
        pass
    help_text = " ".join(capsys.readouterr().out.split())
    assert "each one-at-a-time row sends" in help_text and "more than 4 per client" in help_text
