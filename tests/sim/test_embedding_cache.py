"""The semantic-cache benchmark's embedding cache: saved chunk by chunk, a stopped run resumes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("embedding_cache", ROOT / "benchmarks" / "embedding_cache.py")
ec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ec)


class Fake:
    """Each text's vector is its number; stops (KeyboardInterrupt, as ctrl-C) after ``stop_after`` chunks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.chunks, self.texts, self.stop_after = 0, 0, stop_after

    def encode(self, texts):
        if self.stop_after is not None and self.chunks == self.stop_after:
            raise KeyboardInterrupt
        self.chunks += 1
        self.texts += len(texts)
        return np.array([[float(t), 1.0] for t in texts], dtype=np.float32)


def test_a_stopped_run_keeps_its_chunks_and_the_next_run_embeds_only_the_rest(tmp_path, monkeypatch):
    # The first run embedded all 13,083 banking77 texts and saved only at the end: stopped, all was lost.
    monkeypatch.setattr(ec, "CHUNK", 4)
    texts = [str(i) for i in range(10)]  # chunks of 4, 4, 2
    with pytest.raises(KeyboardInterrupt):
        ec.embed_all(texts, tmp_path, embedder=Fake(stop_after=2))
    assert not list(tmp_path.glob("*.npy"))  # no whole cache yet
    assert len(list(tmp_path.glob("*.parts/*.npy"))) == 2  # but the two chunks done
    again = Fake()
    vecs = ec.embed_all(texts, tmp_path, embedder=again)
    assert again.texts == 2  # only the last chunk
    assert vecs[:, 0].tolist() == list(range(10))
    assert not list(tmp_path.glob("*.parts"))  # joined into one file, parts removed
    third = Fake()
    assert (ec.embed_all(texts, tmp_path, embedder=third) == vecs).all() and third.texts == 0


def test_run_as_a_script_it_names_the_benchmark_to_run(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "embedding_cache.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "run: python benchmarks/semantic_cache.py" in done.stderr
