"""Zero-copy views of a safetensors file's tensors as NumPy arrays, header fully checked.

``safetensors.torch.load`` copies every tensor into its own torch tensor, ~15 us each on a
busy CPU; an adapter has hundreds of small tensors and the engine stacks them right away,
so NumPy views (~1 us each) halve a cold adapter load. bfloat16, which NumPy lacks, is read
as its raw 16 bits (``uint16``); :func:`to_torch` reinterprets them.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
a JSON header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (plus an optional
``__metadata__``), then the data; offsets are relative to the data.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

# safetensors dtype -> (NumPy dtype holding its bits, torch dtype)
FLOAT_DTYPES: dict[str, tuple[type[np.generic], torch.dtype]] = {
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
}
# names of other dtypes in torch's spelling, for error messages
OTHER_DTYPES = {
    "F64": "torch.float64",
    "I64": "torch.int64",
    "I32": "torch.int32",
    "I16": "torch.int16",
    "I8": "torch.int8",
    "U8": "torch.uint8",
    "BOOL": "torch.bool",
    "F8_E4M3": "torch.float8_e4m3fn",
    "F8_E5M2": "torch.float8_e5m2",
}
MAX_HEADER_BYTES = 100 << 20  # the format's own limit


class SafetensorsFormatError(ValueError):
    """Bytes that are not a well-formed safetensors file; the message says where."""


class UnsupportedDtypeError(ValueError):
    """A tensor whose dtype is not a float type the engine serves."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, OTHER_DTYPES.get(dtype, dtype)
        super().__init__(f"{name!r} has dtype {self.dtype}")


@dataclass(frozen=True)
class TensorView:
    dtype: str  # safetensors name: F32, F16 or BF16
    shape: tuple[int, ...]
    array: np.ndarray  # a read-only view into the file's bytes (bf16 as uint16)


def read_views(data: bytes) -> dict[str, TensorView]:
    """Every tensor of ``data``, checked against the header (dtype, shape, in-bounds offsets)."""
    if len(data) < 8:
        raise SafetensorsFormatError(f"{len(data)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data)
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise SafetensorsFormatError(f"header length {header_len} exceeds the file")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsFormatError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header is not a JSON object")
    start = 8 + header_len
    payload = len(data) - start
    views: dict[str, TensorView] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _entry(name, entry, payload)
        if dtype not in FLOAT_DTYPES:
            raise UnsupportedDtypeError(name, dtype)
        np_dtype = FLOAT_DTYPES[dtype][0]
        count = math.prod(shape)
        if end - begin != count * np.dtype(np_dtype).itemsize:
            raise SafetensorsFormatError(
                f"{name!r}: {end - begin} bytes for shape {list(shape)} of {dtype}"
            )
        array = np.frombuffer(data, dtype=np_dtype, count=count, offset=start + begin)
        views[name] = TensorView(dtype, shape, array.reshape(shape))
    return views


def _entry(name: str, entry: object, payload: int) -> tuple[str, tuple[int, ...], list[int]]:
    if not isinstance(entry, dict):
        raise SafetensorsFormatError(f"{name!r}: header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise SafetensorsFormatError(f"{name!r}: dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise SafetensorsFormatError(f"{name!r}: shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= payload
    ):
        raise SafetensorsFormatError(
            f"{name!r}: data_offsets {offsets!r} outside the {payload}-byte data"
        )
    return dtype, tuple(shape), offsets


def to_torch(array: np.ndarray, dtype: str) -> torch.Tensor:
    """A torch tensor sharing ``array``'s memory, with ``dtype``'s meaning (bf16 bits too)."""
    tensor = torch.from_numpy(array)
    torch_dtype = FLOAT_DTYPES[dtype][1]
    return tensor.view(torch_dtype) if tensor.dtype != torch_dtype else tensor
