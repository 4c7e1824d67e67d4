"""Triton kernel for N:M masks (fp32 / fp16 scores), the fused form of the rank rule of
:mod:`overparam.backend.nm` (whose ``"reference"`` stable-sort implementation it must equal):

    rank_i = #{j : s_j > s_i} + #{j < i : s_j = s_i},   keep_i = rank_i < N

for every group of M consecutive scores (M a power of two ≤ 16). One program handles
``BLOCK`` groups: it loads the ``(BLOCK, M)`` tile once and compares it against each of its
M columns, so every score is read once and the mask written once.

Registered as implementation ``"triton"`` of routine ``"nm_mask"`` and loaded only when chosen
(``nm_mask(..., impl="triton")``, or ``"auto"`` on CUDA); on CPU tensors it runs only under
``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..nm import nm_groups, nm_ungroup

__all__ = ["nm_mask_triton"]


@triton.jit
def _nm_kernel(s_ptr, out_ptr, G, N: tl.constexpr, M: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, M)
    inb = rows[:, None] < G
    tile = tl.load(s_ptr + rows[:, None] * M + cols[None, :], mask=inb, other=0.0)
    rank = tl.zeros((BLOCK, M), dtype=tl.int32)
    for j in tl.static_range(M):
        sj = tl.load(s_ptr + rows * M + j, mask=rows < G, other=0.0)[:, None]
        beats = (sj > tile) | ((sj == tile) & (cols[None, :] > j))
        rank += beats.to(tl.int32)
    tl.store(out_ptr + rows[:, None] * M + cols[None, :], (rank < N).to(tl.int8), mask=inb)


def nm_mask_triton(scores: torch.Tensor, n: int, m: int, dim: int = 1) -> torch.Tensor:
    """Same signature and result as :func:`overparam.backend.nm.nm_reference`: bool mask of ``scores``' shape."""
    if scores.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"the triton N:M kernel takes float32 or float16 scores, got {scores.dtype}")
    if m & (m - 1) or m > 16:
        raise ValueError(f"the triton N:M kernel needs M a power of two <= 16, got {m}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    g = nm_groups(scores, m, dim).contiguous()
    out = torch.empty(g.shape, dtype=torch.int8, device=g.device)
    block = 128
    _nm_kernel[(triton.cdiv(g.shape[0], block),)](g, out, g.shape[0], N=n, M=m, BLOCK=block)
    return nm_ungroup(out.view(torch.bool), scores, dim)
