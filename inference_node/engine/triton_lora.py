"""Batched multi-LoRA (Punica BGMV semantics) as two Triton kernels, for CUDA.

Semantics, the same as the CPU op ``torch.ops.openledger.bgmv_`` (``csrc/bgmv.cpp``): for
every token ``t`` with slot ``i = indices[t]`` in ``[0, slots + 1)``::

    y[t] += (x[t] @ lora_a[i, :rank].T) @ lora_b[i, :rank]

and tokens with ``indices[t] == -1`` (or out of range, as in ``bgmv_``) are left untouched.
``lora_a: [slots + 1, max_rank, in]``, ``lora_b: [slots + 1, max_rank, out]`` (B transposed
and already scaled, so one slot's rank rows are contiguous), ``rank`` the batch's largest
rank (rows past a slot's own rank are zeros). Products accumulate in fp32 whatever the dtype.

Two launches per projection, as vLLM's ``bgmv_shrink`` / ``bgmv_expand``:

- shrink: grid ``(tokens, splits)``; program ``(t, s)`` dots ``x[t]`` with the slot's rank
  rows over the ``in`` tiles ``s, s + splits, ...`` and writes an fp32 partial
  ``[splits, tokens, rank]``. Splitting ``in`` gives a decode batch (a few tokens) enough
  programs to fill a GPU; the partials are summed by the expand kernel in a fixed order
  instead of with atomics, so results are bitwise reproducible run to run.
- expand: grid ``(tokens, out blocks)``; each program sums the partials into the token's
  ``[rank]`` vector, multiplies it into the slot's ``[rank, block]`` tile of B and adds the
  result into ``y`` in place (one rounding to y's dtype, after the fp32 sum).

Both kernels read each token's adapter rows in place (no gathered copies, unlike the torch
``gather`` kernel). The module imports without triton (``triton_available()`` is then
False). Under ``TRITON_INTERPRET=1`` Triton runs the same kernels on CPU tensors with NumPy,
which is how the tests check them on a machine without a GPU. The variable must be set
before triton is first imported in the process: Triton's own library (``tl.sum`` among it)
is ``@triton.jit`` code, decorated, for the compiler or the interpreter, at that import; a
process holds one mode (and transformers/peft import triton when it is installed).
"""

from __future__ import annotations  # kernel annotations stay strings: no triton needed here

import contextlib
import functools
import os
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU install without the dev extras: the kernels are never jitted
    triton = None
    tl = None

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# elements in one program's [rank, block] fp32 tile: 4096 is 32 registers a thread with
# Triton's default 4 warps, small enough to leave room for the loads in flight
TILE_ELEMENTS = 4096
# a power-of-two floor for every block: smaller tiles save nothing (masked lanes issue no
# memory traffic) and 16 keeps to the layouts Triton's GPU backends are most exercised on
MIN_BLOCK = 16
# split ``in`` until the shrink grid has about this many programs (an H100 has 132 SMs); a
# prefill batch has that many tokens already and is not split
SHRINK_PROGRAMS = 256


def _interpreting() -> bool:
    """Whether ``triton.jit`` makes interpreted (NumPy, CPU) kernels: it reads
    ``TRITON_INTERPRET`` when it decorates, through ``triton.knobs`` since Triton 3.4."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# the mode triton's library was decorated in, read once here, next to (in practice just
# after) triton's import: the variable changed later would give kernels of one mode calling
# library functions of the other
INTERPRETING = triton is not None and _interpreting()


def triton_available() -> bool:
    """Triton importable and something to run it on: CUDA, or its CPU interpreter."""
    if triton is None:
        return False
    return INTERPRETING or torch.cuda.is_available()


def _shrink_kernel(
    x_ptr,
    a_ptr,
    idx_ptr,
    partial_ptr,
    tokens,
    in_features,
    rank,
    slot_count,
    splits,
    stride_xt,
    stride_xi,
    stride_as,
    stride_ar,
    stride_ai,
    stride_idx,
    BLOCK_R: tl.constexpr,  # noqa: N803 (Triton's capitals for constexpr)
    BLOCK_K: tl.constexpr,  # noqa: N803 (Triton's capitals for constexpr)
):
    # int64 offsets: slot * stride_as passes 2**31 for large adapter pools
    t = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    slot = tl.load(idx_ptr + t * stride_idx)
    if (slot < 0) | (slot >= slot_count):
        return
    r = tl.arange(0, BLOCK_R)
    r_mask = r < rank
    a_rows = a_ptr + slot * stride_as + r[:, None] * stride_ar  # [BLOCK_R, 1]
    acc = tl.zeros([BLOCK_R], dtype=tl.float32)
    for k0 in range(split * BLOCK_K, in_features, splits * BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < in_features
        xv = tl.load(x_ptr + t * stride_xt + k * stride_xi, mask=k_mask, other=0.0)
        a = tl.load(
            a_rows + k[None, :] * stride_ai, mask=r_mask[:, None] & k_mask[None, :], other=0.0
        )
        acc += tl.sum(a.to(tl.float32) * xv.to(tl.float32)[None, :], axis=1)
    tl.store(partial_ptr + (split * tokens + t) * rank + r, acc, mask=r_mask)


def _expand_kernel(
    y_ptr,
    b_ptr,
    idx_ptr,
    partial_ptr,
    tokens,
    out_features,
    rank,
    slot_count,
    splits,
    stride_yt,
    stride_yo,
    stride_bs,
    stride_br,
    stride_bo,
    stride_idx,
    BLOCK_R: tl.constexpr,  # noqa: N803 (Triton's capitals for constexpr)
    BLOCK_N: tl.constexpr,  # noqa: N803 (Triton's capitals for constexpr)
):
    t = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    slot = tl.load(idx_ptr + t * stride_idx)
    if (slot < 0) | (slot >= slot_count):
        return
    r = tl.arange(0, BLOCK_R)
    r_mask = r < rank
    shrink = tl.zeros([BLOCK_R], dtype=tl.float32)
    for split in range(0, splits):  # a fixed order: the same sum on every run
        shrink += tl.load(partial_ptr + (split * tokens + t) * rank + r, mask=r_mask, other=0.0)
    n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < out_features
    b = tl.load(
        b_ptr + slot * stride_bs + r[:, None] * stride_br + n[None, :] * stride_bo,
        mask=r_mask[:, None] & n_mask[None, :],
        other=0.0,
    )
    delta = tl.sum(shrink[:, None] * b.to(tl.float32), axis=0)  # [BLOCK_N]
    y_at = y_ptr + t * stride_yt + n * stride_yo
    y = tl.load(y_at, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_at, (y + delta).to(y_ptr.dtype.element_ty), mask=n_mask)


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """The jitted kernels, decorated on first use (not at import: no triton needed here)."""
    return triton.jit(_shrink_kernel), triton.jit(_expand_kernel)


def _block(features: int, block_r: int) -> int:
    """The widest power-of-two block over ``features`` that keeps the tile in budget."""
    cap = max(MIN_BLOCK, TILE_ELEMENTS // block_r)
    return max(MIN_BLOCK, min(triton.next_power_of_2(features), cap))


def _check(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    indices: torch.Tensor,
    rank: int,
) -> None:
    for name, tensor, dims in (
        ("y", y, 2),
        ("x", x, 2),
        ("lora_a", lora_a, 3),
        ("lora_b", lora_b, 3),
        ("indices", indices, 1),
    ):
        if tensor.dim() != dims:
            raise ValueError(f"{name} must have {dims} dimensions, has shape {tuple(tensor.shape)}")
        if tensor.device != y.device:
            raise ValueError(f"{name} is on {tensor.device}, y on {y.device}")
    if y.device.type != "cuda" and not (y.device.type == "cpu" and INTERPRETING):
        raise ValueError(
            f"y is on {y.device}: the Triton kernels run on CUDA tensors, or on CPU tensors "
            "under TRITON_INTERPRET=1"
        )
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x has dtype {x.dtype}, expected one of {SUPPORTED_DTYPES}")
    for name, tensor in (("y", y), ("lora_a", lora_a), ("lora_b", lora_b)):
        if tensor.dtype != x.dtype:
            raise ValueError(f"{name} has dtype {tensor.dtype}, x has {x.dtype}")
    if indices.dtype != torch.int64:
        raise ValueError(f"indices has dtype {indices.dtype}, expected torch.int64")
    tokens, in_features = x.shape
    if y.shape[0] != tokens or indices.shape[0] != tokens:
        raise ValueError(
            f"token counts differ: x {tokens}, y {y.shape[0]}, indices {indices.shape[0]}"
        )
    if lora_a.shape[2] != in_features:
        raise ValueError(f"lora_a of shape {tuple(lora_a.shape)} does not match x's {in_features}")
    if tuple(lora_b.shape) != (*lora_a.shape[:2], y.shape[1]):
        raise ValueError(
            f"lora_b of shape {tuple(lora_b.shape)}, expected "
            f"{(*lora_a.shape[:2], y.shape[1])} from lora_a and y"
        )
    if not isinstance(rank, int) or not 0 <= rank <= lora_a.shape[1]:
        raise ValueError(f"rank {rank!r} is not an int in [0, max_rank = {lora_a.shape[1]}]")


def triton_bgmv_(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    indices: torch.Tensor,
    rank: int,
) -> None:
    """``y[t] += (x[t] @ lora_a[i, :rank].T) @ lora_b[i, :rank]`` for ``i = indices[t] >= 0``,
    in place; shapes and semantics as the module docstring and ``bgmv_``. Any strides."""
    _check(y, x, lora_a, lora_b, indices, rank)
    tokens, in_features = x.shape
    out_features = y.shape[1]
    if tokens == 0 or rank == 0 or out_features == 0:
        return
    shrink_kernel, expand_kernel = _kernels()
    block_r = max(MIN_BLOCK, triton.next_power_of_2(rank))
    block_k = _block(in_features, block_r)
    block_n = _block(out_features, block_r)
    splits = max(1, min(triton.cdiv(in_features, block_k), SHRINK_PROGRAMS // tokens))
    slot_count = lora_a.shape[0]
    # Triton launches on the current CUDA device, which need not be the tensors' one
    with torch.cuda.device(y.device) if y.is_cuda else contextlib.nullcontext():
        # fp32 partials of the shrink; the CUDA caching allocator makes this a free-list pop
        partial = torch.empty((splits, tokens, rank), dtype=torch.float32, device=x.device)
        shrink_kernel[(tokens, splits)](
            x,
            lora_a,
            indices,
            partial,
            tokens,
            in_features,
            rank,
            slot_count,
            splits,
            *x.stride(),
            *lora_a.stride(),
            indices.stride(0),
            BLOCK_R=block_r,
            BLOCK_K=block_k,
        )
        expand_kernel[(tokens, triton.cdiv(out_features, block_n))](
            y,
            lora_b,
            indices,
            partial,
            tokens,
            out_features,
            rank,
            slot_count,
            splits,
            *y.stride(),
            *lora_b.stride(),
            indices.stride(0),
            BLOCK_R=block_r,
            BLOCK_N=block_n,
        )
