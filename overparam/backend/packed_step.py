"""One optimizer step on the kept entries of a masked parameter, with packed state.

The kernels behind :class:`overparam.prune.PackedAdamW` / :class:`~overparam.prune.PackedSGD`:
for the flat indices ``index (K,)`` of the kept entries of ``param`` (``None``: every entry, the
dense case), the state tensors hold ``K`` entries and the update of a kept entry is torch's::

    AdamW   w ← w(1 − lr·wd)  (decoupled; Adam: g ← g + wd·w);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
            (AMSGrad: v̂ ← max(v̂, v));  w ← w − lr/bc₁ · m / (√v̂ / √bc₂ + ε)
    SGD     g ← g + wd·w;  b ← μb + (1−τ)g (b ← g at the first step);  d = g + μb (Nesterov) or b;  w ← w − lr·d

Routines ``"packed_adamw_step"`` and ``"packed_sgd_step"`` of :mod:`~overparam.backend.dispatch`:
``"reference"`` (eager: gather by index, update, scatter), ``"compiled"`` (the same as one
``torch.compile``'d program, :mod:`~overparam.backend.compiled`; opt-in: the first call compiles,
the step's numbers are tensor inputs so later steps never recompile) and ``"triton"`` (one kernel per
parameter that gathers, updates the state in place and scatters, reading every kept entry once;
``"auto"`` on CUDA, on CPU only under ``TRITON_INTERPRET=1``). In place; nothing is returned.

Example:
    >>> p = torch.zeros(4); p.grad = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> idx = torch.tensor([1, 3]); m, v = torch.zeros(2), torch.zeros(2)
    >>> packed_adamw_step(p, p.grad, idx, m, v, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    >>> [round(x, 6) for x in p.tolist()]   # the first Adam step moves each kept entry by lr·sign(g)
    [0.0, -0.1, 0.0, -0.1]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import dispatch
from .checks import check_real
from .compiled import compile_unavailable, lazy_compile

__all__ = ["packed_adamw_step", "packed_sgd_step", "check_adamw_hyper", "check_sgd_hyper"]


def _check(param: Tensor, grad: Tensor, index: Tensor | None, state: dict[str, Tensor | None]) -> int:
    """The number of kept entries ``K``; raises naming the argument when a shape or dtype is off."""
    if not isinstance(param, Tensor) or not param.is_floating_point():
        raise TypeError(f"param must be a floating-point tensor, got {getattr(param, 'dtype', type(param).__name__)}")
    if isinstance(grad, Tensor) and grad.dtype != param.dtype:
        raise TypeError(f"grad must have param's dtype {param.dtype}, got {grad.dtype}")
    if not isinstance(grad, Tensor) or grad.shape != param.shape:
        raise ValueError(f"grad must be a tensor of param's shape {tuple(param.shape)}, got "
                         f"{tuple(grad.shape) if isinstance(grad, Tensor) else type(grad).__name__}")
    if index is None:
        k = param.numel()
    else:
        if not isinstance(index, Tensor) or index.dtype != torch.int64 or index.ndim != 1:
            raise TypeError("index must be a 1-D int64 tensor of flat indices (or None for every entry)")
        k = index.numel()
    for name, t in state.items():
        if t is not None and (not isinstance(t, Tensor) or t.numel() != k or t.dtype != param.dtype):
            raise ValueError(f"{name} must hold {k} entries of param's dtype {param.dtype}")
    return k


@dispatch.register("packed_adamw_step", "reference")
def packed_adamw_reference(param: Tensor, grad: Tensor, index: Tensor | None, exp_avg: Tensor, exp_avg_sq: Tensor,
                           max_exp_avg_sq: Tensor | None = None, *, lr: float, beta1: float, beta2: float, eps: float,
                           weight_decay: float, step: float, decoupled: bool = True) -> None:
    """The eager step (shapes as :func:`packed_adamw_step`)."""
    check_adamw_hyper(lr, beta1, beta2, eps, weight_decay, step)
    _check(param, grad, index, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "max_exp_avg_sq": max_exp_avg_sq})
    w = _kept(param, index)
    d = grad.reshape(-1) if index is None else grad.reshape(-1).index_select(0, index)
    if weight_decay:
        if decoupled:
            w.mul_(1 - lr * weight_decay)
        else:
            d = d.add(w, alpha=weight_decay)
    exp_avg.lerp_(d, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(d, d, value=1 - beta2)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    es = exp_avg_sq
    if max_exp_avg_sq is not None:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        es = max_exp_avg_sq
    denom = (es.sqrt() / math.sqrt(bc2)).add_(eps)
    w.addcdiv_(exp_avg, denom, value=-lr / bc1)
    _scatter(param, index, w)


def check_adamw_hyper(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: float) -> None:
    """Raise naming the hyperparameter unless ``lr, eps, weight_decay >= 0``, ``beta1, beta2 ∈ [0, 1)``, ``step >= 1``."""
    for name, v in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        check_real(v, name, at_least=0.0, finite=True)
    for name, v in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= check_real(v, name, at_least=0.0) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    check_real(step, "step", at_least=1.0, finite=True)


def check_sgd_hyper(lr: float, momentum: float, dampening: float, weight_decay: float) -> None:
    """Raise naming the hyperparameter unless all are finite and ``>= 0``."""
    for name, v in (("lr", lr), ("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
        check_real(v, name, at_least=0.0, finite=True)


def _kept(param: Tensor, index: Tensor | None) -> Tensor:
    """The kept weights as a flat tensor: a view of ``param`` when dense and contiguous, else a copy."""
    if index is None:
        return param.view(-1) if param.is_contiguous() else param.reshape(-1)
    return param.reshape(-1).index_select(0, index)


def _scatter(param: Tensor, index: Tensor | None, w: Tensor) -> None:
    if index is None:
        if w.data_ptr() != param.data_ptr():
            param.copy_(w.view_as(param))
    elif param.is_contiguous():
        param.view(-1).index_copy_(0, index, w)
    else:
        param.copy_(param.reshape(-1).index_copy(0, index, w).view_as(param))


@dispatch.register("packed_sgd_step", "reference")
def packed_sgd_reference(param: Tensor, grad: Tensor, index: Tensor | None, momentum_buffer: Tensor | None, *,
                         lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                         nesterov: bool = False, first: bool = False) -> None:
    """The eager step (shapes as :func:`packed_sgd_step`)."""
    check_sgd_hyper(lr, momentum, dampening, weight_decay)
    _check(param, grad, index, {"momentum_buffer": momentum_buffer})
    if momentum and momentum_buffer is None:
        raise ValueError("momentum > 0 needs a momentum_buffer")
    d = grad.reshape(-1) if index is None else grad.reshape(-1).index_select(0, index)
    w = None
    if weight_decay:
        w = _kept(param, index)
        d = d.add(w, alpha=weight_decay)
    if momentum:
        if first:
            momentum_buffer.copy_(d)
        else:
            momentum_buffer.mul_(momentum).add_(d, alpha=1 - dampening)
        d = d.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    if index is not None and w is None and param.is_contiguous():
        param.view(-1).index_add_(0, index, d, alpha=-lr)
        return
    if w is None:
        w = _kept(param, index)
    w.add_(d, alpha=-lr)
    _scatter(param, index, w)


def _writable(param: Tensor) -> Tensor:
    """``param`` itself when contiguous, else a contiguous copy that :func:`_write_back` copies back.
    The compiled cores take whole tensors, not flat views of them: a view's base would become part
    of what the compiled code is specialised on."""
    return param if param.is_contiguous() else param.contiguous()


def _write_back(param: Tensor, work: Tensor) -> None:
    if work is not param:
        param.copy_(work)


def _scalars(like: Tensor, *values: float) -> Tensor:
    """The step's numbers as one tensor (fp64 for fp64 parameters, else fp32): a tensor input never
    makes ``torch.compile`` specialise (and recompile) on a value."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.tensor(values, dtype=dtype, device=like.device)


def _gather(param: Tensor, grad: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    flat, g = param.view(-1), grad.reshape(-1)
    return flat, (flat if index is None else flat.index_select(0, index)), (g if index is None else g.index_select(0, index))


def _put(flat: Tensor, index: Tensor | None, w: Tensor) -> None:
    if index is None:
        flat.copy_(w)
    else:
        flat.index_copy_(0, index, w)


def _adamw_core(param: Tensor, grad: Tensor, index: Tensor | None, exp_avg: Tensor, exp_avg_sq: Tensor,
                max_exp_avg_sq: Tensor | None, h: Tensor, decay: bool, l2: bool) -> None:
    """``h = (1 − β₁, β₂, 1 − β₂, ε, 1 − lr·wd, wd, lr / bc₁, √bc₂)``; the update of the module docstring."""
    flat, w, d = _gather(param, grad, index)
    if decay:
        w = w * h[4]
    elif l2:
        d = d + h[5] * w
    m = exp_avg + h[0] * (d - exp_avg)
    v = exp_avg_sq * h[1] + h[2] * d * d
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    if max_exp_avg_sq is not None:
        v = torch.maximum(max_exp_avg_sq, v)
        max_exp_avg_sq.copy_(v)
    _put(flat, index, w - h[6] * (m / (v.sqrt() / h[7] + h[3])))


_adamw_compiled = lazy_compile(_adamw_core)


@dispatch.register("packed_adamw_step", "compiled", available=compile_unavailable)
def packed_adamw_compiled(param: Tensor, grad: Tensor, index: Tensor | None, exp_avg: Tensor, exp_avg_sq: Tensor,
                          max_exp_avg_sq: Tensor | None = None, *, lr: float, beta1: float, beta2: float, eps: float,
                          weight_decay: float, step: float, decoupled: bool = True) -> None:
    """:func:`packed_adamw_reference` as one ``torch.compile``'d gather-update-scatter (the first call
    compiles, seconds; the numbers, ``step`` included, are tensor inputs: no recompilation per step)."""
    check_adamw_hyper(lr, beta1, beta2, eps, weight_decay, step)
    _check(param, grad, index, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "max_exp_avg_sq": max_exp_avg_sq})
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    h = _scalars(param, 1 - beta1, beta2, 1 - beta2, eps, 1 - lr * weight_decay, weight_decay, lr / bc1,
                 math.sqrt(bc2))
    work, wd = _writable(param), bool(weight_decay)
    _adamw_compiled(work, grad, index, exp_avg, exp_avg_sq, max_exp_avg_sq, h, wd and decoupled, wd and not decoupled)
    _write_back(param, work)


def _sgd_core(param: Tensor, grad: Tensor, index: Tensor | None, momentum_buffer: Tensor | None, h: Tensor,
              l2: bool, nesterov: bool) -> None:
    """``h = (lr, μ, 1 − τ, wd, first)``; the update of the module docstring."""
    flat, w, d = _gather(param, grad, index)
    if l2:
        d = d + h[3] * w
    if momentum_buffer is not None:
        b = torch.where(h[4] != 0, d, momentum_buffer * h[1] + h[2] * d)
        momentum_buffer.copy_(b)
        d = d + h[1] * b if nesterov else b
    _put(flat, index, w - h[0] * d)


_sgd_compiled = lazy_compile(_sgd_core)


@dispatch.register("packed_sgd_step", "compiled", available=compile_unavailable)
def packed_sgd_compiled(param: Tensor, grad: Tensor, index: Tensor | None, momentum_buffer: Tensor | None, *,
                        lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                        nesterov: bool = False, first: bool = False) -> None:
    """:func:`packed_sgd_reference` as one ``torch.compile``'d gather-update-scatter (``first`` is a
    tensor input too: the first step does not compile a variant of its own)."""
    check_sgd_hyper(lr, momentum, dampening, weight_decay)
    _check(param, grad, index, {"momentum_buffer": momentum_buffer})
    if momentum and momentum_buffer is None:
        raise ValueError("momentum > 0 needs a momentum_buffer")
    h = _scalars(param, lr, momentum, 1 - dampening, weight_decay, float(bool(first)))
    work = _writable(param)
    _sgd_compiled(work, grad, index, momentum_buffer if momentum else None, h, bool(weight_decay), bool(nesterov))
    _write_back(param, work)


def packed_adamw_step(param: Tensor, grad: Tensor, index: Tensor | None, exp_avg: Tensor, exp_avg_sq: Tensor,
                      max_exp_avg_sq: Tensor | None = None, *, lr: float, beta1: float, beta2: float, eps: float,
                      weight_decay: float, step: float, decoupled: bool = True, impl: str | None = None) -> None:
    """One Adam(W) step of the kept entries of ``param``, in place.

    Args:
        param: the parameter (any shape); its pruned entries are not touched.
        grad: ``param``'s gradient (same shape).
        index: ``(K,)`` int64 flat indices of the kept entries, or None for all of them.
        exp_avg, exp_avg_sq, max_exp_avg_sq: ``(K,)`` packed state (the last only for AMSGrad), updated in place.
        lr, beta1, beta2, eps, weight_decay, decoupled: as ``torch.optim.AdamW`` (``decoupled=False``: Adam's L2).
        step: the step number after this step (1 at the first), for the bias corrections.
        impl: ``"reference"``, ``"compiled"``, ``"triton"`` or None/``"auto"``.
    """
    dispatch.call("packed_adamw_step", param, grad, index, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, beta1=beta1,
                  beta2=beta2, eps=eps, weight_decay=weight_decay, step=step, decoupled=decoupled, impl=impl)


def packed_sgd_step(param: Tensor, grad: Tensor, index: Tensor | None, momentum_buffer: Tensor | None, *, lr: float,
                    momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                    first: bool = False, impl: str | None = None) -> None:
    """One SGD step (momentum, dampening, Nesterov, L2 weight decay as ``torch.optim.SGD``) of the kept
    entries of ``param``, in place; ``momentum_buffer (K,)`` (None without momentum) is set to the
    direction at the ``first`` step, as torch does.

    Example:
        >>> p = torch.ones(3); g = torch.ones(3); b = torch.zeros(2)
        >>> packed_sgd_step(p, g, torch.tensor([0, 2]), b, lr=0.5, momentum=0.9, first=True)
        >>> p.tolist(), b.tolist()
        ([0.5, 1.0, 0.5], [1.0, 1.0])
    """
    dispatch.call("packed_sgd_step", param, grad, index, momentum_buffer, lr=lr, momentum=momentum,
                  dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, first=first, impl=impl)
