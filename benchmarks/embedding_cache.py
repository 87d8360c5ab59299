"""The semantic-cache benchmark's embeddings of a dataset, computed in batches and cached on disk, resumably.

The cache of a list of texts is ``CACHE_DIR/minilm-<SHA-256 of the texts>.npy``. While it is being computed,
each chunk of `CHUNK` texts is saved as it is done, under ``CACHE_DIR/minilm-<digest>.parts/`` (a chunk file is
written under a temporary name and renamed, so a stopped run leaves only whole chunks): a run stopped part way
(banking77's 13,083 texts take about 9 minutes on 2 CPU cores) resumes at the first chunk not saved. When every
chunk is there they are joined into the one ``.npy`` and the parts are removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["CHUNK", "embed_all"]

#: Texts per saved chunk: the most work a stopped run loses.
CHUNK = 256


def _minilm():
    from plugins.semantic_cache_embed import MiniLMEmbedder

    return MiniLMEmbedder()


def embed_all(texts: list[str], cache_dir: Path, *, embedder=None, progress: Callable | None = None) -> np.ndarray:
    """Unit-length embeddings of ``texts`` (one row each), from ``cache_dir`` when computed before; else computed
    chunk by chunk with ``embedder`` (default: MiniLM), each chunk saved as it is done, and resumed from the chunks
    a stopped run saved. ``progress(iterable, total)``: wraps the chunks still to compute (a progress bar)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
    path = cache_dir / f"minilm-{digest}.npy"
    if path.is_file():
        return np.load(path)
    parts = cache_dir / f"minilm-{digest}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(texts), CHUNK)
    todo = [i for i in starts if not (parts / f"{i:08d}.npy").is_file()]
    if todo:
        embedder = embedder or _minilm()
        for i in progress(todo, len(todo)) if progress else todo:
            vecs = np.ascontiguousarray(embedder.encode(texts[i:i + CHUNK]), dtype=np.float32)
            tmp = parts / f"{i:08d}.tmp.npy"
            np.save(tmp, vecs)
            os.replace(tmp, parts / f"{i:08d}.npy")
    vecs = np.concatenate([np.load(parts / f"{i:08d}.npy") for i in starts]) if texts else np.zeros((0, 384), np.float32)
    tmp = cache_dir / f"minilm-{digest}.tmp.npy"
    np.save(tmp, vecs)
    os.replace(tmp, path)
    shutil.rmtree(parts, ignore_errors=True)
    return vecs


if __name__ == "__main__":  # run as a script (its folder first on sys.path): say what to run instead
    from bench_cli import library_module

    raise SystemExit(library_module("embedding_cache.py", "semantic_cache.py [--help]"))
