"""A padded, growable KV cache shared by the requests of a continuous batch.

Layout per layer: keys/values ``[rows, kv_heads, capacity, head_dim]`` with ``length`` columns in
use, plus a ``[rows, capacity]`` validity mask. Rows are right-aligned: a row's tokens end at
column ``length - 1`` and anything to its left that is not its own is padding (mask 0). Decoding
writes one new column in place (no re-concatenation of the whole cache per token, unlike
``DynamicCache``).

Rows joining or leaving cost what they hold, not what the batch holds, as in a paged engine: the
storage keeps spare rows and spare columns on both sides of the used ones (``keys``, ``values``
and ``mask`` are views of it). A join writes its rows into spare rows (a prompt longer than the
batch's KV length takes spare columns on the left); a leave moves the batch's last rows into the
holes (`hole_filling_order`) and drops leading columns no row uses by moving a start offset. The
whole cache is copied only when the storage grows (geometrically). Copying it at every join and
leave (as this store once did) made a prefill next to 120 running sequences cost 8x its forward
pass, a cost no serving engine with paged KV pays and no latency model of iteration shapes sees.

The model sees it through ``forward_cache()``, a transformers ``Cache`` whose layers write into
this storage, so any model that takes ``cache=`` / ``past_key_values=`` works unchanged.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

_MIN_GROWTH = 32


def hole_filling_order(alive: list[int]) -> list[int]:
    """For a `BatchKV.keep` after the rows not in ``alive`` (sorted) left: the order that moves the
    fewest rows - every surviving row below ``len(alive)`` stays, the last rows fill the holes."""
    k = len(alive)
    kept = set(alive)
    tail = iter([i for i in alive if i >= k])
    return [j if j in kept else next(tail) for j in range(k)]


class BatchKV:
    """KV storage for ``rows`` sequences. Padding is zero-filled: masked entries must not be NaN."""

    def __init__(
        self,
        num_layers: int,
        device: torch.device,
        dtype: torch.dtype,
        kv_heads: int | None = None,
        head_dim: int | None = None,
    ) -> None:
        """``kv_heads``/``head_dim`` known up front let buffers be allocated outside the model's
        forward (no data-dependent branch for ``torch.compile`` to guard on); unknown, the first
        write allocates them from the key's shape."""
        self.num_layers = num_layers
        self.device = device
        self.dtype = dtype
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        # Storage: [row capacity, (kv_heads,) column capacity(, head_dim)]; rows [0, n) and columns
        # [start, start + length) are in use.
        self._k: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        self._m = torch.zeros(0, 0, dtype=torch.long, device=device)
        self._n = 0
        self._start = 0
        self.length = 0  # columns in use
        self._rows_idx: torch.Tensor | None = None  # rows taking part in the running forward (None = all)
        self._pending = 0  # columns written by the running forward, committed after it

    # -- shape ---------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Columns available from the first used one (used + room to grow on the right)."""
        return self._m.shape[1] - self._start

    @property
    def mask(self) -> torch.Tensor:
        return self._m[: self._n, self._start :]

    @property
    def keys(self) -> list[torch.Tensor]:
        return [self._key(i) for i in range(len(self._k))]

    @property
    def values(self) -> list[torch.Tensor]:
        return [self._value(i) for i in range(len(self._v))]

    def _key(self, layer: int) -> torch.Tensor:
        return self._k[layer][: self._n, :, self._start :]

    def _value(self, layer: int) -> torch.Tensor:
        return self._v[layer][: self._n, :, self._start :]

    def nbytes(self) -> int:
        """Bytes allocated for keys and values (the whole storage, spare rows and columns included)."""
        return sum(t.numel() * t.element_size() for t in (*self._k, *self._v))

    def valid_tokens(self) -> int:
        return int(self.mask[:, : self.length].sum().item()) if self.rows else 0

    # -- forward plumbing ----------------------------------------------------------------------
    def forward_cache(self, rows: list[int] | None, new_columns: int) -> Cache:
        """A ``Cache`` for one forward over ``rows`` (None = every row) adding ``new_columns`` tokens."""
        if not self._k and self.kv_heads is not None and self.head_dim is not None:
            self._allocate(self.kv_heads, self.head_dim, self.dtype)
        self._ensure_capacity(self.length + new_columns)
        self._rows_idx = None if rows is None else torch.tensor(rows, dtype=torch.long, device=self.device)
        self._pending = new_columns
        return Cache(layers=[_BatchKVLayer(self, i) for i in range(self.num_layers)])

    def attention_mask(self, rows: list[int] | None, new_columns: int) -> torch.Tensor:
        """2-D mask ``[n, length + new_columns]`` for a forward over ``rows`` whose new tokens are all real."""
        past = self.mask[:, : self.length] if rows is None else self.mask[rows, : self.length]
        ones = torch.ones(past.shape[0], new_columns, dtype=past.dtype, device=self.device)
        return torch.cat([past, ones], dim=1)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the forward's new keys/values for ``layer``; return the keys/values to attend over."""
        if not self._k:
            if key.shape[0] != self.rows:
                raise RuntimeError(f"first write has {key.shape[0]} rows but the batch has {self.rows}")
            self._allocate(key.shape[1], key.shape[3], key.dtype)
        end = self.length + key.shape[-2]
        k_buf, v_buf = self._key(layer), self._value(layer)
        if self._rows_idx is None:
            k_buf[:, :, self.length : end].copy_(key)
            v_buf[:, :, self.length : end].copy_(value)
            return k_buf[:, :, :end], v_buf[:, :, :end]
        idx = self._rows_idx
        k_buf[idx, :, self.length : end] = key.to(k_buf.dtype)
        v_buf[idx, :, self.length : end] = value.to(v_buf.dtype)
        return k_buf[idx, :, :end], v_buf[idx, :, :end]

    def commit(self, real: torch.Tensor | None = None) -> None:
        """Finish a forward: mark its columns valid for the rows that took part.

        ``real`` ([n, new_columns], prefill only) marks which new columns hold real tokens; padded
        positions are zeroed so that garbage computed for them can never leak into attention.
        """
        start, end = self.length, self.length + self._pending
        rows = slice(None) if self._rows_idx is None else self._rows_idx
        mask = self.mask
        if real is None:
            mask[rows, start:end] = 1
        else:
            if self._rows_idx is not None:
                raise RuntimeError("padded (prefill) forwards must cover every row")
            mask[:, start:end] = real.to(mask.dtype)
            pad = (real == 0)[:, None, :, None]
            for buf in (*self.keys, *self.values):
                buf[:, :, start:end].masked_fill_(pad, 0)
        self.length = end
        self._rows_idx, self._pending = None, 0

    def abort(self) -> None:
        """Drop a failed forward's partial writes (they are beyond ``length``, so just forget them)."""
        for buf in (*self.keys, *self.values):
            buf[:, :, self.length : self.length + self._pending].zero_()
        self._rows_idx, self._pending = None, 0

    # -- membership ----------------------------------------------------------------------------
    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then drop leading columns no kept row uses. Costs the
        rows that move (``hole_filling_order`` moves only the last rows into the holes)."""
        if not rows:
            self._m = torch.zeros(0, 0, dtype=torch.long, device=self.device)
            self._k, self._v = [], []
            self._n, self._start, self.length = 0, 0, 0
            return
        dst = [j for j, r in enumerate(rows) if r != j]
        if dst:
            d = torch.tensor(dst, dtype=torch.long, device=self.device)
            s = torch.tensor([rows[j] for j in dst], dtype=torch.long, device=self.device)
            for buf in (self._m, *self._k, *self._v):
                buf[d] = buf.index_select(0, s)  # gathered first: overlapping moves are safe
        self._n = len(rows)
        self._trim_left()

    def extend(self, other: BatchKV) -> None:
        """Append ``other``'s rows below ours, right-aligning both to the longer length."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self._k, self._v, self._m = other._k, other._v, other._m
            self._n, self._start, self.length = other._n, other._start, other.length
            return
        if not self._k or not other._k:
            raise RuntimeError("cannot merge a batch KV that was never written")
        if other.length > self.length:
            self._grow_left(other.length - self.length)
        n, m, lo = self._n, other.rows, other.length
        self._ensure_rows(n + m)
        first = self._start + self.length - lo  # other's columns, right-aligned to ours
        new = slice(n, n + m)
        self._m[new] = 0
        self._m[new, first : first + lo] = other.mask[:, :lo]
        for mine, theirs in ((self._k, other.keys), (self._v, other.values)):
            for a, b in zip(mine, theirs):
                a[new].zero_()
                a[new, :, first : first + lo] = b[:, :, :lo]
        self._n = n + m

    # -- internals -----------------------------------------------------------------------------
    def _allocate(self, kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        shape = (self._m.shape[0], kv_heads, self._m.shape[1], head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]

    def load_prefixes(self, prefixes: list, length: int) -> None:
        """Start with one row per entry of ``prefixes``: ``(keys, values)`` per layer, each
        ``[kv_heads, tokens, head_dim]``, right-aligned to end at column ``length`` (or ``None``:
        an empty row). The reused prompt prefixes of a prefill that computes only the rest."""
        rows = len(prefixes)
        some = next(p for p in prefixes if p is not None)
        kv_heads, head_dim = some[0][0].shape[0], some[0][0].shape[-1]
        self._m = torch.zeros(rows, _grown(length), dtype=torch.long, device=self.device)
        self._n, self._start, self.length = rows, 0, length
        self._allocate(kv_heads, head_dim, self.dtype)
        for i, p in enumerate(prefixes):
            if p is None:
                continue
            keys, values = p
            n = keys[0].shape[-2]
            for layer in range(self.num_layers):
                self._k[layer][i, :, length - n : length] = keys[layer].to(self.dtype)
                self._v[layer][i, :, length - n : length] = values[layer].to(self.dtype)
            self._m[i, length - n : length] = 1

    def row_tokens(self, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A row's real (unmasked) keys and values per layer, in order: ``[kv_heads, tokens, head_dim]``."""
        idx = torch.nonzero(self.mask[row, : self.length]).flatten()
        return ([k[row].index_select(1, idx) for k in self.keys], [v[row].index_select(1, idx) for v in self.values])

    def reset_rows(self, rows: int) -> None:
        """Start empty with ``rows`` sequences (buffers are allocated by the first write)."""
        self._m = torch.zeros(rows, 0, dtype=torch.long, device=self.device)
        self._k, self._v = [], []
        self._n, self._start, self.length = rows, 0, 0

    def _ensure_capacity(self, needed: int) -> None:
        if needed > self.capacity:
            self._relayout(self._spare_rows(), needed)

    def _spare_rows(self) -> int:
        """Rows for new storage that copies the batch anyway: as many as now, unless the batch uses
        under a quarter of them - then the rows in use and half as many spare. A batch that shrank
        for good gives its spare rows back; one that breathes keeps them, or the next burst of joins
        pays for growing them again: a whole-cache copy each time, inside a prefill's time."""
        have = self._m.shape[0]
        if 4 * self._n >= have:
            return have
        return min(have, max(self._n + self._n // 2, 1))

    def _ensure_rows(self, rows: int) -> None:
        """Room for ``rows`` sequences: storage twice as tall. Each growth copies the whole cache, and
        they come while a burst of joins grows the batch: from 8 to 128 sequences 4 copies, not 7 at 1.5x."""
        have = self._m.shape[0]
        if rows > have:
            self._relayout(max(rows, 2 * have), self.length)

    def _grow_left(self, columns: int) -> None:
        """``columns`` more columns before the used ones (a longer row joins): spare ones if there
        are enough, zeroed for the rows in use (they become their padding), else new storage."""
        if columns > self._start:
            self._relayout(self._m.shape[0], self.length + columns, shift=columns)
            return
        first = self._start - columns
        self._m[: self._n, first : self._start] = 0
        for buf in (*self._k, *self._v):
            buf[: self._n, :, first : self._start].zero_()
        self._start, self.length = first, self.length + columns

    def _relayout(self, row_capacity: int, needed: int, shift: int = 0) -> None:
        """New storage of ``row_capacity`` rows with room for ``needed`` columns and headroom on both
        sides; the used rows and columns are copied over, ``shift`` columns to the right (zeros before)."""
        room = _grown(needed) - needed
        start, columns = room, room + _grown(needed)
        n, used = self._n, self.length
        old = slice(self._start, self._start + used)
        new = slice(start + shift, start + shift + used)
        mask = torch.zeros(row_capacity, columns, dtype=self._m.dtype, device=self.device)
        mask[:n, new] = self._m[:n, old]
        for bufs in (self._k, self._v):
            for i, t in enumerate(bufs):
                # rows in use are zero outside their columns (padding); spare rows are zeroed by the join
                # that takes them (`extend`), so they are not written here: a tall store costs its rows in use
                out = t.new_empty(row_capacity, t.shape[1], columns, t.shape[3])
                out[:n].zero_()
                out[:n, :, new] = t[:n, :, old]
                bufs[i] = out
        self._m, self._start, self.length = mask, start, used + shift

    def _trim_left(self) -> None:
        """Drop leading columns no row uses: the used columns start later (nothing is copied)."""
        if self.length == 0 or self._n == 0:
            return
        used = self.mask[:, : self.length].any(dim=0)
        if bool(used[0]):
            return
        nz = torch.nonzero(used)
        first = int(nz[0].item()) if nz.numel() else self.length
        self._start += first
        self.length -= first


class _BatchKVLayer(DynamicLayer):
    """One layer of a ``BatchKV`` seen through the transformers cache-layer interface."""

    def __init__(self, store: BatchKV, layer_idx: int) -> None:
        super().__init__()
        self._store = store
        self._layer_idx = layer_idx
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:  # noqa: ARG002
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):  # noqa: ARG002
        return self._store.write(self._layer_idx, key_states, value_states)

    def get_seq_length(self) -> int:
        return self._store.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._store.length + query_length, 0

    def get_max_length(self) -> int:
        return -1


def _grown(needed: int) -> int:
    """Capacity for ``needed`` columns with headroom, so decoding rarely reallocates."""
    return max(needed + _MIN_GROWTH, needed + needed // 4)
