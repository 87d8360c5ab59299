import tracemalloc

import pytest

from sim.traces import read_trace


@pytest.mark.slow
def test_large_canonical_csv_streams_in_bounded_memory(tmp_path):
    n = 200_000
    p = tmp_path / "big.csv"
    with open(p, "w", newline="") as f:
        f.write("request_id,arrival_s,prompt_tokens,output_tokens\n")
        f.writelines(f"req-{i},{i * 0.01:.6f},{100 + i % 4000},{1 + i % 500}\n" for i in range(n))
    size = p.stat().st_size
    tracemalloc.start()
    try:
        count, tokens = 0, 0
        for r in read_trace(p):
            count += 1
            tokens += r.prompt_tokens
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert size > 5_000_000
    print(f"peak {peak} B for a {size} B file")
    assert peak < size / 10, (peak, size)  # read buffer + one row, never the file


@pytest.mark.slow
def test_large_burstgpt_csv_streams_in_bounded_memory(tmp_path):
    n = 200_000
    p = tmp_path / "BurstGPT_big.csv"
    with open(p, "w", newline="") as f:
        f.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        f.writelines(f"{i // 3},{'GPT-4' if i % 5 == 0 else 'ChatGPT'},{100 + i % 4000},{i % 499},"
                     f"{100 + i % 4000 + i % 499},{'API log' if i % 2 else 'Conversation log'}\n" for i in range(n))
    size = p.stat().st_size
    tracemalloc.start()
    try:
        reader = read_trace(p, failed="drop", models="ChatGPT", model_column=True)
        count = sum(1 for _ in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count + sum(reader.dropped.values()) == n and reader.dropped["failed"] > 0
    assert size > 5_000_000
    print(f"peak {peak} B for a {size} B file")
    assert peak < size / 10, (peak, size)  # read buffer + one row, never the file
