"""A padded, growable KV cache shared by the requests of a continuous batch.

Layout per layer: keys/values ``[rows, kv_heads, capacity, head_dim]`` with ``length`` columns in
use, plus a ``[rows, capacity]`` validity mask. Rows are right-aligned: a row's tokens end at
column ``length - 1`` and anything to its left that is not its own is padding (mask 0). Decoding
writes one new column in place (no re-concatenation of the whole cache per token, unlike
``DynamicCache``); rows joining or leaving cost one copy, done only when membership changes.

The model sees it through ``forward_cache()``, a transformers ``Cache`` whose layers write into
this storage, so any model that takes ``cache=`` / ``past_key_values=`` works unchanged.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

_MIN_GROWTH = 32


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
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=device)
        self.length = 0  # columns in use
        self._rows_idx: torch.Tensor | None = None  # rows taking part in the running forward (None = all)
        self._pending = 0  # columns written by the running forward, committed after it

    # -- shape ---------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def nbytes(self) -> int:
        """Bytes allocated for keys and values (capacity, not just the used columns)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def valid_tokens(self) -> int:
        return int(self.mask[:, : self.length].sum().item()) if self.rows else 0

    # -- forward plumbing ----------------------------------------------------------------------
    def forward_cache(self, rows: list[int] | None, new_columns: int) -> Cache:
        """A ``Cache`` for one forward over ``rows`` (None = every row) adding ``new_columns`` tokens."""
        if not self.keys and self.kv_heads is not None and self.head_dim is not None:
            self._allocate((self.rows, self.kv_heads, 0, self.head_dim), self.dtype)
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
        if not self.keys:
            if key.shape[0] != self.rows:
                raise RuntimeError(f"first write has {key.shape[0]} rows but the batch has {self.rows}")
            self._allocate((self.rows, key.shape[1], self.capacity, key.shape[3]), key.dtype)
        end = self.length + key.shape[-2]
        k_buf, v_buf = self.keys[layer], self.values[layer]
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
        if real is None:
            self.mask[rows, start:end] = 1
        else:
            if self._rows_idx is not None:
                raise RuntimeError("padded (prefill) forwards must cover every row")
            self.mask[:, start:end] = real.to(self.mask.dtype)
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
        """Keep only ``rows`` (in that order), then drop leading columns no kept row uses."""
        if rows == list(range(self.rows)):
            self._trim_left()
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, idx)
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]
        if not rows:
            self.length = 0
            self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
            self.keys, self.values = [], []
            return
        self._trim_left()

    def extend(self, other: BatchKV) -> None:
        """Append ``other``'s rows below ours, right-aligning both to the longer length."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.keys, self.values, self.mask, self.length = other.keys, other.values, other.mask, other.length
            return
        length = max(self.length, other.length)
        capacity = max(_grown(length), self.capacity if length <= self.capacity else 0)
        rows = self.rows + other.rows
        mask = torch.zeros(rows, capacity, dtype=self.mask.dtype, device=self.device)
        mask[: self.rows, length - self.length : length] = self.mask[:, : self.length]
        mask[self.rows :, length - other.length : length] = other.mask[:, : other.length]
        keys, values = [], []
        for mine, theirs, out in ((self.keys, other.keys, keys), (self.values, other.values, values)):
            for a, b in zip(mine, theirs):
                buf = a.new_zeros(rows, a.shape[1], capacity, a.shape[3])
                buf[: self.rows, :, length - self.length : length] = a[:, :, : self.length]
                buf[self.rows :, :, length - other.length : length] = b[:, :, : other.length]
                out.append(buf)
        self.keys, self.values, self.mask, self.length = keys, values, mask, length

    # -- internals -----------------------------------------------------------------------------
    def _allocate(self, shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]

    def load_prefixes(self, prefixes: list, length: int) -> None:
        """Start with one row per entry of ``prefixes``: ``(keys, values)`` per layer, each
        ``[kv_heads, tokens, head_dim]``, right-aligned to end at column ``length`` (or ``None``:
        an empty row). The reused prompt prefixes of a prefill that computes only the rest."""
        rows = len(prefixes)
        some = next(p for p in prefixes if p is not None)
        kv_heads, head_dim = some[0][0].shape[0], some[0][0].shape[-1]
        capacity = _grown(length)
        self.mask = torch.zeros(rows, capacity, dtype=torch.long, device=self.device)
        shape = (rows, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        for i, p in enumerate(prefixes):
            if p is None:
                continue
            keys, values = p
            n = keys[0].shape[-2]
            for layer in range(self.num_layers):
                self.keys[layer][i, :, length - n : length] = keys[layer].to(self.dtype)
                self.values[layer][i, :, length - n : length] = values[layer].to(self.dtype)
            self.mask[i, length - n : length] = 1
        self.length = length

    def row_tokens(self, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A row's real (unmasked) keys and values per layer, in order: ``[kv_heads, tokens, head_dim]``."""
        idx = torch.nonzero(self.mask[row, : self.length]).flatten()
        return ([k[row].index_select(1, idx) for k in self.keys], [v[row].index_select(1, idx) for v in self.values])

    def reset_rows(self, rows: int) -> None:
        """Start empty with ``rows`` sequences (buffers are allocated by the first write)."""
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=self.device)
        self.keys, self.values, self.length = [], [], 0

    def _ensure_capacity(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = _grown(needed)
        self.mask = _resize(self.mask, capacity, dim=1)
        self.keys = [_resize(k, capacity, dim=2) for k in self.keys]
        self.values = [_resize(v, capacity, dim=2) for v in self.values]

    def _trim_left(self) -> None:
        used = self.mask[:, : self.length].any(dim=0)
        if self.length == 0 or bool(used[0]):
            return
        nz = torch.nonzero(used)
        first = int(nz[0].item()) if nz.numel() else self.length
        keep = self.length - first
        capacity = _grown(keep)
        self.mask = _shift(self.mask, first, keep, capacity, dim=1)
        self.keys = [_shift(k, first, keep, capacity, dim=2) for k in self.keys]
        self.values = [_shift(v, first, keep, capacity, dim=2) for v in self.values]
        self.length = keep


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


def _resize(t: torch.Tensor, capacity: int, dim: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = capacity
    out = t.new_zeros(shape)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out


def _shift(t: torch.Tensor, first: int, keep: int, capacity: int, dim: int) -> torch.Tensor:
    shape = list(t.shape)
    shape[dim] = capacity
    out = t.new_zeros(shape)
    out.narrow(dim, 0, keep).copy_(t.narrow(dim, first, keep))
    return out
