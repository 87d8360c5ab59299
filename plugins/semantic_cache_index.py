"""The semantic cache's vector index: faiss HNSW on inner product of unit vectors (= cosine),
with a payload per entry, and removal by tombstone (HNSW cannot delete; the graph is rebuilt
from the live vectors once a quarter of it is dead)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["VectorIndex"]


class VectorIndex:
    """Unit vectors with payloads under stable ids; ``search`` returns the nearest live entries."""

    def __init__(self, dim: int, *, hnsw_m: int = 32, ef_construction: int = 40, ef_search: int = 64) -> None:
        import logging

        # faiss's loader logs each CPU-specific build it could not load at INFO, with a
        # ModuleNotFoundError: a daemon logging at INFO showed three "errors" that are not.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
        try:
            import faiss
        except ModuleNotFoundError as exc:  # (not installed: one line naming the extra, not "No module named")
            if exc.name != "faiss":
                raise
            from controlplane.extras import install_hint

            raise ImportError(f"the semantic cache's index needs faiss: {install_hint('semantic')}") from None

        self._faiss = faiss
        # Lookups and inserts are one vector each: an OpenMP team costs more than it gives
        # (measured 30x the CPU time with 2 threads on a busy 2-core machine). Process-wide.
        faiss.omp_set_num_threads(1)
        self.dim, self.hnsw_m, self.ef_construction, self.ef_search = dim, hnsw_m, ef_construction, ef_search
        # rows in the graph, dead ones included: the first _rows of buffers grown by doubling
        self._vec_buf = np.empty((1024, dim), dtype=np.float32)
        self._id_buf = np.empty(1024, dtype=np.int64)
        self._rows = 0
        self._payloads: dict[int, Any] = {}  # live entries only
        self._next_id = 0
        self._index = self._new_index()

    def _new_index(self):
        hnsw = self._faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        index = self._faiss.IndexIDMap(hnsw)
        self._hnsw = hnsw  # IndexIDMap does not keep the Python object alive
        return index

    def __len__(self) -> int:
        return len(self._payloads)

    @property
    def dead(self) -> int:
        return self._rows - len(self._payloads)

    def add(self, vectors: np.ndarray, payloads: list[Any]) -> list[int]:
        """Add rows (unit length, float32) with one payload each; their ids, in order."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if vectors.shape[1] != self.dim or len(vectors) != len(payloads):
            raise ValueError(f"expected {len(payloads)} vectors of dim {self.dim}, got shape {vectors.shape}")
        ids = np.arange(self._next_id, self._next_id + len(payloads), dtype=np.int64)
        self._next_id += len(payloads)
        self._index.add_with_ids(vectors, ids)
        need = self._rows + len(ids)
        if need > len(self._id_buf):
            size = max(need, 2 * len(self._id_buf))
            self._vec_buf = np.concatenate([self._vec_buf[:self._rows], np.empty((size - self._rows, self.dim), np.float32)])
            self._id_buf = np.concatenate([self._id_buf[:self._rows], np.empty(size - self._rows, np.int64)])
        self._vec_buf[self._rows:need] = vectors
        self._id_buf[self._rows:need] = ids
        self._rows = need
        self._payloads.update(zip(ids.tolist(), payloads))
        return ids.tolist()

    def payload(self, entry_id: int) -> Any:
        return self._payloads[entry_id]

    def remove(self, entry_id: int) -> None:
        if self._payloads.pop(entry_id, None) is None:
            return
        if self.dead > 1000 and self.dead * 4 > self._rows:
            self._rebuild()

    def _rebuild(self) -> None:
        ids = self._id_buf[:self._rows]
        keep = np.fromiter((i in self._payloads for i in ids.tolist()), dtype=bool, count=self._rows)
        vectors, ids = self._vec_buf[:self._rows][keep], ids[keep]
        self._rows = len(ids)
        self._vec_buf[:self._rows], self._id_buf[:self._rows] = vectors, ids
        self._index = self._new_index()
        if self._rows:
            self._index.add_with_ids(np.ascontiguousarray(self._vec_buf[:self._rows]), self._id_buf[:self._rows].copy())

    def search(self, vector: np.ndarray, k: int) -> list[tuple[float, int]]:
        """Up to ``k`` live entries nearest to ``vector``: (cosine similarity, id), best first."""
        if not self._payloads:
            return []
        fetch = min(self._rows, k + min(self.dead, 2 * k))
        sims, ids = self._index.search(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), fetch)
        out = [(float(s), int(i)) for s, i in zip(sims[0], ids[0]) if i >= 0 and int(i) in self._payloads]
        return out[:k]
