"""Triton kernel for the softmax cross-entropy Hessian-vector product in the logits, the fused form
of :func:`overparam.backend.softmax_ce.softmax_ce_reference` (which it must equal)::

    out_i = valid_i / div · p_i ⊙ (u_i − ⟨p_i, u_i⟩),   p_i = softmax(z_i)

One program per row. Pass 1 streams the row in ``BLOCK`` chunks keeping the running max ``m``,
the normaliser ``s = Σ e^{z−m}`` and ``d = Σ e^{z−m} u`` (both rescaled when ``m`` grows); pass
2 streams it again and writes ``e^{z−m}/s · (u − d/s)``. Loads are upcast to fp32 and the
accumulation is fp32; only the output is written (no ``(N, V)`` temporary).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..softmax_ce import _scale, check_softmax_ce_args

__all__ = ["softmax_ce_triton"]


@triton.jit
def _ce_hvp_kernel(z_ptr, u_ptr, valid_ptr, out_ptr, V, inv_div, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * V
    keep = tl.load(valid_ptr + row).to(tl.float32)
    m = tl.full((), -float("inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    d = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inb = cols < V
        z = tl.load(z_ptr + base + cols, mask=inb, other=-float("inf")).to(tl.float32)
        u = tl.load(u_ptr + base + cols, mask=inb, other=0.0).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        alpha = tl.exp(m - m_new)
        e = tl.exp(z - m_new)
        s = s * alpha + tl.sum(e, axis=0)
        d = d * alpha + tl.sum(e * u, axis=0)
        m = m_new
    dot = d / s
    scale = keep * inv_div / s
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inb = cols < V
        z = tl.load(z_ptr + base + cols, mask=inb, other=-float("inf")).to(tl.float32)
        u = tl.load(u_ptr + base + cols, mask=inb, other=0.0).to(tl.float32)
        out = tl.exp(z - m) * (u - dot) * scale
        tl.store(out_ptr + base + cols, out.to(out_ptr.dtype.element_ty), mask=inb)


def softmax_ce_triton(logits: torch.Tensor, u: torch.Tensor, target: torch.Tensor | None = None, *,
                      ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Same signature and result as :func:`overparam.backend.softmax_ce.softmax_ce_reference` (fp32/fp16/bf16 inputs)."""
    z, v, t = check_softmax_ce_args(logits, u, target, ignore_index, reduction)
    if torch.float64 in (z.dtype, v.dtype):
        raise TypeError("the triton softmax-CE kernel accumulates in fp32: use impl='reference' for fp64")
    valid, div = _scale(t, ignore_index, reduction, z.shape[0], z.device)
    keep = (torch.ones(z.shape[0], dtype=torch.int8, device=z.device) if valid is None else valid.to(torch.int8))
    z, v = z.contiguous(), v.contiguous()
    out = torch.empty_like(v)
    N, V = z.shape
    if N:
        block = min(1024, triton.next_power_of_2(V))
        _ce_hvp_kernel[(N,)](z, v, keep, out, V, 1.0 / div, BLOCK=block)
    return out.reshape(u.shape)
