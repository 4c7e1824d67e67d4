"""Triton kernels for the packed masked optimizer steps, the fused forms of
:func:`overparam.backend.packed_step.packed_adamw_reference` / ``packed_sgd_reference`` (which they
must equal to fp32 rounding). One program updates ``BLOCK`` kept entries: it gathers their weights
and gradients by index, updates the packed state in place and scatters the weights back — every
kept entry and its state is read and written once; pruned entries are never touched. Loads are
upcast to fp32 and the arithmetic is fp32.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..packed_step import _check, check_adamw_hyper, check_sgd_hyper

__all__ = ["packed_adamw_triton", "packed_sgd_triton"]

_BLOCK = 1024


@triton.jit
def _adamw_kernel(p_ptr, g_ptr, idx_ptr, m_ptr, v_ptr, vmax_ptr, K, lr, b1, b2, eps, wd, bc1, bc2_sqrt,
                  DENSE: tl.constexpr, DECOUPLED: tl.constexpr, AMSGRAD: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = k < K
    if DENSE:
        at = k.to(tl.int64)
    else:
        at = tl.load(idx_ptr + k, mask=ok, other=0)
    w = tl.load(p_ptr + at, mask=ok, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + at, mask=ok, other=0.0).to(tl.float32)
    if DECOUPLED:
        w = w * (1.0 - lr * wd)
    else:
        g = g + wd * w
    m = tl.load(m_ptr + k, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + k, mask=ok, other=0.0).to(tl.float32)
    m = m + (g - m) * (1.0 - b1)
    v = v * b2 + (1.0 - b2) * g * g
    tl.store(m_ptr + k, m.to(m_ptr.dtype.element_ty), mask=ok)
    tl.store(v_ptr + k, v.to(v_ptr.dtype.element_ty), mask=ok)
    if AMSGRAD:
        vm = tl.maximum(tl.load(vmax_ptr + k, mask=ok, other=0.0).to(tl.float32), v)
        tl.store(vmax_ptr + k, vm.to(vmax_ptr.dtype.element_ty), mask=ok)
        v = vm
    w = w - (lr / bc1) * m / (tl.sqrt(v) / bc2_sqrt + eps)
    tl.store(p_ptr + at, w.to(p_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _sgd_kernel(p_ptr, g_ptr, idx_ptr, b_ptr, K, lr, mu, damp, wd, DENSE: tl.constexpr, MOMENTUM: tl.constexpr,
                FIRST: tl.constexpr, NESTEROV: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = k < K
    if DENSE:
        at = k.to(tl.int64)
    else:
        at = tl.load(idx_ptr + k, mask=ok, other=0)
    w = tl.load(p_ptr + at, mask=ok, other=0.0).to(tl.float32)
    d = tl.load(g_ptr + at, mask=ok, other=0.0).to(tl.float32) + wd * w
    if MOMENTUM:
        if FIRST:
            b = d
        else:
            b = tl.load(b_ptr + k, mask=ok, other=0.0).to(tl.float32) * mu + (1.0 - damp) * d
        tl.store(b_ptr + k, b.to(b_ptr.dtype.element_ty), mask=ok)
        if NESTEROV:
            d = d + mu * b
        else:
            d = b
    tl.store(p_ptr + at, (w - lr * d).to(p_ptr.dtype.element_ty), mask=ok)


def _flat(param: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not param.is_contiguous():
        raise ValueError("the triton packed step needs a contiguous param (use impl='reference')")
    if param.dtype == torch.float64:
        raise TypeError("the triton packed step computes in fp32: use impl='reference' for fp64")
    return param.view(-1), grad.contiguous().view(-1)


def packed_adamw_triton(param, grad, index, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, beta1, beta2, eps,
                        weight_decay, step, decoupled=True) -> None:
    """Same signature and effect as :func:`overparam.backend.packed_step.packed_adamw_reference`."""
    check_adamw_hyper(lr, beta1, beta2, eps, weight_decay, step)
    K = _check(param, grad, index, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "max_exp_avg_sq": max_exp_avg_sq})
    p, g = _flat(param, grad)
    if K == 0:
        return
    dense = index is None
    _adamw_kernel[(triton.cdiv(K, _BLOCK),)](
        p, g, p if dense else index, exp_avg, exp_avg_sq, exp_avg if max_exp_avg_sq is None else max_exp_avg_sq, K,
        float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), 1 - beta1 ** step,
        math.sqrt(1 - beta2 ** step), DENSE=dense, DECOUPLED=bool(decoupled), AMSGRAD=max_exp_avg_sq is not None,
        BLOCK=_BLOCK)


def packed_sgd_triton(param, grad, index, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                      nesterov=False, first=False) -> None:
    """Same signature and effect as :func:`overparam.backend.packed_step.packed_sgd_reference`."""
    check_sgd_hyper(lr, momentum, dampening, weight_decay)
    K = _check(param, grad, index, {"momentum_buffer": momentum_buffer})
    if momentum and momentum_buffer is None:
        raise ValueError("momentum > 0 needs a momentum_buffer")
    p, g = _flat(param, grad)
    if K == 0:
        return
    dense = index is None
    _sgd_kernel[(triton.cdiv(K, _BLOCK),)](
        p, g, p if dense else index, p if momentum_buffer is None else momentum_buffer, K, float(lr), float(momentum),
        float(dampening), float(weight_decay), DENSE=dense, MOMENTUM=bool(momentum), FIRST=bool(first),
        NESTEROV=bool(nesterov), BLOCK=_BLOCK)
