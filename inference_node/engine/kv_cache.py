"""A KV cache for continuous batching: rows join and leave between decode steps.

Hugging Face's ``DynamicCache`` concatenates every step (copying the whole cache each token)
and has no way to add a request to a running batch. Here each layer owns preallocated buffers
``[max_rows, kv_heads, capacity, head_dim]`` that grow by doubling along the sequence; the
model sees views ``[rows, kv_heads, length, head_dim]``. All rows share one ``length``; a row
shorter than the others is left-padded (zeros, masked out by the scheduler's attention mask).

- :meth:`BatchKVCache.append_rows` adds the rows of a freshly prefilled cache (one copy of the
  new rows; the running rows move only when the newcomers are longer);
- :meth:`BatchKVCache.remove_row` moves the last row into the hole (one row copied, not the
  whole cache), so the caller's row order must follow the same swap;
- :meth:`BatchKVCache.trim_left` drops leading columns that every row pads.

Pads are zeros, never uninitialised memory: a masked key gets weight 0, and 0 * NaN would
still poison the output.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.cache_utils import Cache, DynamicLayer

MIN_CAPACITY = 64


class _BufferedLayer(DynamicLayer):
    """One decoder layer's keys and values, as views into growable buffers."""

    def __init__(self, max_rows: int) -> None:
        super().__init__()
        self.max_rows = max_rows
        self.rows = 0
        self.length = 0
        self._k: torch.Tensor | None = None  # [max_rows, heads, capacity, head_dim]
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        _, heads, _, head_dim = key_states.shape
        shape = (self.max_rows, heads, MIN_CAPACITY, head_dim)
        self._k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.is_initialized = True

    @property
    def capacity(self) -> int:
        return 0 if self._k is None else self._k.shape[2]

    def _reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        assert self._k is not None and self._v is not None
        capacity = max(length, 2 * self.capacity)
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
            new[:, :, : self.length].copy_(old[:, :, : self.length])
            setattr(self, name, new)

    def _refresh(self) -> None:
        assert self._k is not None and self._v is not None
        self.keys = self._k[: self.rows, :, : self.length]  # [rows, heads, length, head_dim]
        self.values = self._v[: self.rows, :, : self.length]

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        cache_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states)
            self.rows = key_states.shape[0]
        if key_states.shape[0] != self.rows:
            raise ValueError(f"{key_states.shape[0]} rows of keys for a cache of {self.rows} rows")
        if self.rows > self.max_rows:
            raise ValueError(f"{self.rows} rows exceed the cache's max of {self.max_rows}")
        new = key_states.shape[2]
        self._reserve(self.length + new)
        assert self._k is not None and self._v is not None
        self._k[: self.rows, :, self.length : self.length + new].copy_(key_states)
        self._v[: self.rows, :, self.length : self.length + new].copy_(value_states)
        self.length += new
        self._refresh()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    # batch surgery, mirrored by BatchKVCache

    def append_rows(self, other: _BufferedLayer) -> None:
        assert other._k is not None and other._v is not None
        if not self.is_initialized:
            self.lazy_initialization(other._k[: other.rows])
        assert self._k is not None and self._v is not None
        length = max(self.length, other.length)
        self._reserve(length)
        shift = length - self.length
        if shift and self.rows:
            for buf in (self._k, self._v):
                moved = buf[: self.rows, :, : self.length].clone()
                buf[: self.rows, :, shift:length].copy_(moved)
                buf[: self.rows, :, :shift].zero_()
        start, end, pad = self.rows, self.rows + other.rows, length - other.length
        for buf, src in ((self._k, other._k), (self._v, other._v)):
            buf[start:end, :, :pad].zero_()
            buf[start:end, :, pad:length].copy_(src[: other.rows, :, : other.length])
        self.rows, self.length = end, length
        self._refresh()

    def remove_row(self, row: int) -> None:
        assert self._k is not None and self._v is not None
        last = self.rows - 1
        if row != last:
            self._k[row, :, : self.length].copy_(self._k[last, :, : self.length])
            self._v[row, :, : self.length].copy_(self._v[last, :, : self.length])
        self.rows = last
        if self.rows == 0:
            self.length = 0
        self._refresh()

    def trim_left(self, columns: int) -> None:
        assert self._k is not None and self._v is not None
        for buf in (self._k, self._v):
            kept = buf[: self.rows, :, columns : self.length].clone()
            buf[: self.rows, :, : self.length - columns].copy_(kept)
        self.length -= columns
        self._refresh()


class BatchKVCache(Cache):
    """The KV cache of a running batch of up to ``max_rows`` requests (full attention only)."""

    def __init__(self, config: PretrainedConfig, max_rows: int) -> None:
        text = config.get_text_config(decoder=True)
        layer_types = getattr(text, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types) or getattr(
            text, "use_sliding_window", False
        ):
            raise ValueError("BatchKVCache supports full-attention models only")
        if max_rows <= 0:
            raise ValueError(f"max_rows={max_rows} must be positive")
        super().__init__(layers=[_BufferedLayer(max_rows) for _ in range(text.num_hidden_layers)])
        self.max_rows = max_rows

    @property
    def buffered(self) -> list[_BufferedLayer]:
        return self.layers  # type: ignore[return-value]

    @property
    def rows(self) -> int:
        return self.buffered[0].rows

    @property
    def length(self) -> int:
        return self.buffered[0].length

    def append_rows(self, other: BatchKVCache) -> None:
        """Adds every row of ``other`` after this cache's rows, left-padding the shorter side."""
        if self.rows + other.rows > self.max_rows:
            raise ValueError(f"{self.rows} + {other.rows} rows exceed the max of {self.max_rows}")
        for mine, theirs in zip(self.buffered, other.buffered, strict=True):
            mine.append_rows(theirs)

    def remove_row(self, row: int) -> None:
        """Removes ``row``; the last row takes its index."""
        if not 0 <= row < self.rows:
            raise IndexError(f"row {row} out of range [0, {self.rows})")
        for layer in self.buffered:
            layer.remove_row(row)

    def trim_left(self, columns: int) -> None:
        """Drops the first ``columns`` positions (which every row must pad)."""
        if not 0 <= columns <= self.length:
            raise ValueError(f"cannot trim {columns} of {self.length} columns")
        if columns:
            for layer in self.buffered:
                layer.trim_left(columns)

    def nbytes(self) -> int:
        """Bytes held by the buffers (capacity, not just what is in use)."""
        total = 0
        for layer in self.buffered:
            for buf in (layer._k, layer._v):
                if buf is not None:
                    total += buf.numel() * buf.element_size()
        return total
