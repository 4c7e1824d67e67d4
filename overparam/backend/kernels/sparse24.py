"""Triton kernel: 2:4 selection by magnitude fused with 2:4 compression, the fused form of
:func:`overparam.backend.sparse24.nm_compress_24_reference` (which it must equal exactly).

One program handles ``BLOCK`` quads: it loads each ``(BLOCK, 4)`` tile of the weight once, ranks
the magnitudes (``rank_i = #{j: |w_j| > |w_i|} + #{j < i: |w_j| = |w_i|}``, keep ``rank < 2``),
picks the two stored positions (the kept non-zeros first, then the earliest zeros, as
:func:`~overparam.backend.sparse24.compress_24` does) and writes the mask, the two values and the
quad's 4-bit code; the host packs four codes into each int16 of ``meta`` (``cols/16`` per row).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sparse24 import _check_2d

__all__ = ["nm_compress_24_triton"]


@triton.jit
def _nm24_kernel(w_ptr, mask_ptr, val_ptr, code_ptr, G, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, 4)
    inb = rows[:, None] < G
    tile = tl.load(w_ptr + rows[:, None] * 4 + cols[None, :], mask=inb, other=0.0)
    mag = tl.abs(tile.to(tl.float32))
    rank = tl.zeros((BLOCK, 4), dtype=tl.int32)
    for j in tl.static_range(4):
        sj = tl.abs(tl.load(w_ptr + rows * 4 + j, mask=rows < G, other=0.0).to(tl.float32))[:, None]
        rank += ((sj > mag) | ((sj == mag) & (cols[None, :] > j))).to(tl.int32)
    keep = rank < 2
    mv = tl.where(keep, tile, 0.0)
    key = tl.where(mv != 0, 0, 4) + cols[None, :]
    krank = tl.zeros((BLOCK, 4), dtype=tl.int32)
    for j in tl.static_range(4):
        kj = tl.sum(tl.where(cols[None, :] == j, key, 0), axis=1)[:, None]
        krank += (kj < key).to(tl.int32)
    sel = krank < 2
    p0 = tl.min(tl.where(sel, cols[None, :], 4), axis=1)
    p1 = tl.max(tl.where(sel, cols[None, :], -1), axis=1)
    v0 = tl.sum(tl.where(cols[None, :] == p0[:, None], mv, 0.0), axis=1)
    v1 = tl.sum(tl.where(cols[None, :] == p1[:, None], mv, 0.0), axis=1)
    tl.store(mask_ptr + rows[:, None] * 4 + cols[None, :], keep.to(tl.int8), mask=inb)
    ok = rows < G
    tl.store(val_ptr + rows * 2, v0.to(val_ptr.dtype.element_ty), mask=ok)
    tl.store(val_ptr + rows * 2 + 1, v1.to(val_ptr.dtype.element_ty), mask=ok)
    tl.store(code_ptr + rows, (p0 | (p1 << 2)).to(tl.int8), mask=ok)


def nm_compress_24_triton(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same signature and result as :func:`overparam.backend.sparse24.nm_compress_24_reference` (fp32/fp16/bf16)."""
    _check_2d(w)
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"the triton 2:4 kernel takes float32/float16/bfloat16 weights, got {w.dtype}")
    if bool(torch.isnan(w).any()):
        raise ValueError("w contains NaN")
    rows, cols = w.shape
    wc = w.contiguous()
    G = rows * cols // 4
    mask = torch.empty(rows, cols, dtype=torch.int8, device=w.device)
    values = torch.empty(rows, cols // 2, dtype=w.dtype, device=w.device)
    code = torch.empty(rows, cols // 4, dtype=torch.int8, device=w.device)
    block = 128
    _nm24_kernel[(triton.cdiv(G, block),)](wc, mask, values, code, G, BLOCK=block)
    c = code.to(torch.int32).reshape(rows, cols // 16, 4)
    packed = c[..., 0] | (c[..., 1] << 4) | (c[..., 2] << 8) | (c[..., 3] << 12)
    meta = torch.where(packed >= 2**15, packed - 2**16, packed).to(torch.int16)
    return mask.view(torch.bool), values, meta
