"""Exact percentiles of a stream of floats in bounded memory.

A run's summary needs the exact percentiles of four latencies over every finished request. Held
in memory they cost 32 bytes a request: 320 MB at ten million. ``SpilledValues`` keeps the
newest ``chunk`` values in memory and appends older ones to an anonymous temporary file; the
percentiles are then found by radix selection over the file (a histogram pass on the float's
top 16 bits, then the values of the few bins that hold the wanted ranks), reading ``chunk``
values at a time. The result equals ``numpy.percentile`` (its default, linear method) bit for
bit; below ``chunk`` values nothing touches the disk and numpy computes it directly.
"""

from __future__ import annotations

import math
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from typing import IO, Final

import numpy as np

#: Values kept in memory before the oldest are written out (2 MiB of float64).
DEFAULT_CHUNK: Final = 1 << 18
_SIGN: Final = np.uint64(1 << 63)
_BINS: Final = 1 << 16
#: A bin with at most this many values is selected in memory; a larger one is split again.
_GATHER_MAX: Final = 1 << 21
#: `short_quantile` sorts at most this many values itself; numpy takes longer ones.
_SHORT: Final = 512


def _keys(x: np.ndarray) -> np.ndarray:
    """Unsigned keys that sort like the floats (negative ones reversed)."""
    u = x.view(np.uint64)
    return np.where(u & _SIGN, ~u, u | _SIGN)


def _value(key: int) -> float:
    u = np.uint64(key)
    bits = u & ~_SIGN if u & _SIGN else ~u
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def _in_memory_percentiles(values: np.ndarray, ps: Sequence[float]) -> list[float]:
    """``[float(numpy.percentile(values, p)) for p in ps]`` (linear method), step for step as numpy
    2 computes it for one scalar ``p`` (the same partition of a copy, so even which of two equal
    values, such as -0.0 and 0.0, lands at an index is the same), without calling it: its first
    call imports ``numpy.ma`` (~6 ms at start-up)."""
    n = len(values)
    out = []
    for p in ps:
        q = float(p) / 100
        if not 0.0 <= q <= 1.0:
            raise ValueError("Percentiles must be in the range [0, 100]")
        virtual = (n - 1) * q  # numpy's linear method: (n - 1) * quantile
        # numpy's _get_indexes: floor and floor + 1; at or past the last index, the last value (-1)
        lo, hi = (-1, -1) if virtual >= n - 1 else (math.floor(virtual), math.floor(virtual) + 1)
        part = values.copy()
        # numpy passes np.unique((0, -1, lo, hi)) (np.unique itself imports numpy.ma)
        part.partition(np.array(sorted({0, -1, lo, hi}), dtype=np.intp))
        if math.isnan(part[-1]):  # a NaN sorts last; numpy's answer is then NaN
            out.append(math.nan)
            continue
        a, b = float(part[lo]), float(part[hi])
        gamma = virtual - lo  # numpy subtracts the index it used (-1 past the end, where a == b)
        diff = b - a
        out.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)  # numpy's _lerp
    return out


def short_quantile(values: Sequence[float], q: float) -> float:
    """``float(numpy.quantile(values, q))`` (linear method) of a short sequence, in plain Python: for a
    window of a few dozen or hundred values at every control tick numpy's own call costs more than the sort.
    The same steps as `_in_memory_percentiles`, on the sorted values: without a NaN, and without zeros of
    both signs, equal floats are the same bits, so the values at numpy's two indexes are the ones its
    partition puts there. With either (a NaN sorts last; which of -0.0 and 0.0 lands at an index is the
    partition's), and for a long sequence or a ``q`` out of range, numpy itself."""
    if _numpy_needed(values, q):
        return float(np.quantile(np.asarray(values, dtype=float), q))
    return _sorted_quantile(values, q)


def short_percentile(values: Sequence[float], p: float) -> float:
    """``float(numpy.percentile(values, p))`` (linear method) as `short_quantile` computes it."""
    q = p / 100  # numpy's own division
    if _numpy_needed(values, q):
        return float(np.percentile(np.asarray(values, dtype=float), p))
    return _sorted_quantile(values, q)


def _numpy_needed(values: Sequence[float], q: float) -> bool:
    n = len(values)
    if not 0 < n <= _SHORT or not 0.0 <= q <= 1.0:
        return True
    total = sum(values)
    if total != total:  # a NaN (or infinities of both signs: numpy too)
        return True
    return 0.0 in values and len({math.copysign(1.0, v) for v in values if v == 0.0}) > 1


def _sorted_quantile(values: Sequence[float], q: float) -> float:
    return ranked_quantile(sorted(values), q)


def ranked_quantile(ranked: Sequence[float], q: float) -> float:
    """numpy's linear-method ``q``-quantile of values already sorted, without NaN or zeros of both signs (where
    `short_quantile` hands over to numpy): the same steps, so the same bits, at any length; ``q`` in [0, 1]."""
    n = len(ranked)
    virtual = (n - 1) * q  # numpy's linear method: (n - 1) * quantile
    # numpy's _get_indexes: floor and floor + 1; at or past the last index, the last value (-1)
    lo, hi = (-1, -1) if virtual >= n - 1 else (math.floor(virtual), math.floor(virtual) + 1)
    a, b = float(ranked[lo]), float(ranked[hi])
    gamma = virtual - lo  # numpy subtracts the index it used (-1 past the end, where a == b)
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma  # numpy's _lerp


class SpilledValues:
    """An append-only sequence of floats, its tail in memory, the rest in a temporary file."""

    def __init__(self, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self.buffer = array("d")
        self._file: IO[bytes] | None = None
        self._spilled = 0

    def append(self, value: float) -> None:
        buf = self.buffer
        buf.append(value)
        if len(buf) >= self.chunk:
            self._spill()

    def extend(self, values: Sequence[float]) -> None:
        """Append every value of ``values``, in order (as many `append` calls would)."""
        buf = self.buffer
        room = self.chunk - len(buf)
        if len(values) < room:
            buf.extend(values)
            return
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return self._spilled + len(self.buffer)

    @property
    def spilled(self) -> int:
        """Values written to the temporary file so far."""
        return self._spilled

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="cp-values-")
        self._file.seek(0, 2)
        self.buffer.tofile(self._file)
        self._spilled += len(self.buffer)
        self.buffer = array("d")

    def chunks(self) -> Iterator[np.ndarray]:
        """Every value, oldest first, ``chunk`` at a time."""
        if self._file is not None:
            self._file.seek(0)
            left = self._spilled
            while left:
                n = min(self.chunk, left)
                block = np.fromfile(self._file, dtype=np.float64, count=n)
                if len(block) != n:
                    raise OSError(f"temporary value file is short: read {len(block)} of {n} values")
                left -= n
                yield block
        if self.buffer:
            yield np.frombuffer(self.buffer, dtype=np.float64)

    def mean(self) -> float:
        """The mean (numpy's when nothing was spilled; the correctly rounded sum over n after)."""
        if not len(self):
            raise ValueError("mean of no values")
        if self._file is None:
            return float(np.frombuffer(self.buffer, dtype=np.float64).mean())
        return math.fsum(math.fsum(c.tolist()) for c in self.chunks()) / len(self)

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """``numpy.percentile(values, ps)`` (linear method), exactly, in bounded memory."""
        n = len(self)
        if not n:
            raise ValueError("percentiles of no values")
        if self._file is None:
            return _in_memory_percentiles(np.frombuffer(self.buffer, dtype=np.float64), ps)
        q = np.asarray(ps, dtype=np.float64) / 100
        virtual = q * (n - 1)  # numpy's linear method: (n - 1) * quantile, floor, gamma
        below = np.floor(virtual)
        gamma = virtual - below
        lo = below.astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        at = self._select(sorted({int(i) for i in (*lo, *hi)}))
        a = np.array([at[int(i)] for i in lo])
        b = np.array([at[int(i)] for i in hi])
        diff = b - a
        out = a + diff * gamma  # numpy's _lerp, both branches
        out = np.where(gamma >= 0.5, b - diff * (1 - gamma), out)
        return [float(x) for x in out]

    def _select(self, ranks: Sequence[int]) -> dict[int, float]:
        """The values at these ranks (0-based) of the sorted sequence, by radix selection."""
        found: dict[int, float] = {}
        # rank -> (key prefix, bits fixed by it, rank within the prefix)
        pending = {r: (0, 0, r) for r in ranks}
        while pending:
            groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
            for r, (prefix, bits, k) in pending.items():
                groups.setdefault((prefix, bits), []).append((r, k))
            counts = {g: np.zeros(_BINS, dtype=np.int64) for g in groups}
            for block in self.chunks():
                keys = _keys(block)
                for prefix, bits in groups:
                    sel = keys if bits == 0 else keys[(keys >> np.uint64(64 - bits)) == np.uint64(prefix)]
                    digit = (sel >> np.uint64(48 - bits)) & np.uint64(_BINS - 1)
                    counts[(prefix, bits)] += np.bincount(digit.astype(np.intp), minlength=_BINS)
            gather: dict[tuple[int, int], list[tuple[int, int]]] = {}
            pending = {}
            for (prefix, bits), items in groups.items():
                c = counts[(prefix, bits)]
                cum = np.cumsum(c)
                for r, k in items:
                    digit = int(np.searchsorted(cum, k, side="right"))
                    k_in = k - (int(cum[digit - 1]) if digit else 0)
                    sub = ((prefix << 16) | digit, bits + 16)
                    if sub[1] == 64:
                        found[r] = _value(sub[0])  # every value in this bin is the same float
                    elif c[digit] <= _GATHER_MAX:
                        gather.setdefault(sub, []).append((r, k_in))
                    else:
                        pending[r] = (*sub, k_in)
            if gather:
                parts: dict[tuple[int, int], list[np.ndarray]] = {g: [] for g in gather}
                for block in self.chunks():
                    keys = _keys(block)
                    for prefix, bits in gather:
                        parts[(prefix, bits)].append(block[(keys >> np.uint64(64 - bits)) == np.uint64(prefix)])
                for g, items in gather.items():
                    values = np.concatenate(parts[g])
                    ks = sorted({k for _, k in items})
                    part = np.partition(values, ks)
                    for r, k in items:
                        found[r] = float(part[k])
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
