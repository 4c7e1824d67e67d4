"""The Hessian of softmax cross-entropy in the logits, applied to a vector: the output-layer
product of every Gauss-Newton / Fisher product of a classifier or language model.

For logits ``z (…, V)`` and ``p = softmax(z)``, the Hessian of ``CE(z, y)`` in ``z`` is
``diag(p) − p pᵀ`` (it does not depend on the label ``y``), so for a vector ``u (…, V)``::

    H u = p ⊙ (u − ⟨p, u⟩)                                   (per row)

Rows whose target equals ``ignore_index`` contribute nothing (zero rows), and
``reduction="mean"`` divides by the number of the other rows (the token-mean of
``F.cross_entropy``), ``"sum"`` does not.

Routine ``"softmax_ce_hvp"`` of :mod:`~overparam.backend.dispatch`, one signature
``(logits, u, target=None, *, ignore_index=-100, reduction="mean")``:

* ``"reference"``: eager torch, computing in fp64 for fp64 inputs and in fp32 otherwise; it
  materialises ``p`` and ``p ⊙ u``: three ``(N, V)`` buffers with the output;
* ``"compiled"``: the same expression under ``torch.compile`` (opt-in: ``impl="compiled"``, the first call
  compiles for seconds; inductor fuses the two row
  reductions and the pointwise tail; only the output is materialised);
* ``"triton"``: a fused kernel (:mod:`overparam.backend.kernels.softmax_ce`) that streams each row
  twice (online max / normaliser / ⟨p, u⟩, then the output) and writes only the output
  (``"auto"`` on CUDA when Triton is installed; on CPU only under ``TRITON_INTERPRET=1``).

All accumulate in fp32 at least, and return ``u``'s dtype.

Example:
    >>> z = torch.tensor([[0.0, 0.0]]); u = torch.tensor([[1.0, 0.0]])
    >>> softmax_ce_hvp(z, u)          # p = (½, ½): H u = ½ (1 − ½, 0 − ½)
    tensor([[ 0.2500, -0.2500]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import dispatch
from .checks import check_float
from .compiled import compile_unavailable, lazy_compile

__all__ = ["softmax_ce_hvp", "check_softmax_ce_args"]

REDUCTIONS = ("mean", "sum")


def check_softmax_ce_args(logits: Tensor, u: Tensor, target: Tensor | None, ignore_index: int,
                          reduction: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate the arguments; return ``logits, u`` as ``(N, V)`` and ``target`` as ``(N,)`` (or None).

    Example:
        >>> z, u, y = check_softmax_ce_args(torch.zeros(2, 3, 5), torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), -100, "mean")
        >>> z.shape, y.shape
        (torch.Size([6, 5]), torch.Size([6]))
    """
    check_float(logits, "logits")
    check_float(u, "u")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have a last (class) dimension, got shape {tuple(logits.shape)}")
    if u.shape != logits.shape:
        raise ValueError(f"u must have the logits' shape {tuple(logits.shape)}, got {tuple(u.shape)}")
    if u.device != logits.device:
        raise ValueError(f"u is on {u.device} but logits on {logits.device}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    V = logits.shape[-1]
    z2, u2 = logits.reshape(-1, V), u.reshape(-1, V)
    if target is None:
        return z2, u2, None
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must be an int64/int32 tensor of class indices, got "
                        f"{getattr(target, 'dtype', type(target).__name__)}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(f"target must have shape {tuple(logits.shape[:-1])} (the logits without the class "
                         f"dimension), got {tuple(target.shape)}")
    t = target.reshape(-1)
    bad = (t != ignore_index) & ((t < 0) | (t >= V))
    if bool(bad.any()):
        raise ValueError(f"target holds class indices outside [0, {V}) that are not ignore_index={ignore_index}")
    return z2, u2, t


def _scale(t: Tensor | None, ignore_index: int, reduction: str, n: int, device) -> tuple[Tensor | None, float]:
    """(valid-row mask or None, the reduction's divisor)."""
    valid = None if t is None else (t != ignore_index)
    count = n if valid is None else int(valid.sum())
    return valid, (float(max(count, 1)) if reduction == "mean" else 1.0)


def _expression(z: Tensor, u: Tensor, w: Tensor) -> Tensor:
    """``w ⊙ p ⊙ (u − <p, u>)`` per row, ``w (N,)`` the row weights (0 for ignored rows)."""
    p = torch.softmax(z, dim=-1)
    pu = p * u
    return (pu - p * pu.sum(-1, keepdim=True)) * w[:, None]


def _weights(t: Tensor | None, ignore_index: int, reduction: str, n: int, dtype, device) -> Tensor:
    valid, div = _scale(t, ignore_index, reduction, n, device)
    if valid is None:
        return torch.full((n,), 1.0 / div, dtype=dtype, device=device)
    return valid.to(dtype) / div


@dispatch.register("softmax_ce_hvp", "reference")
def softmax_ce_reference(logits: Tensor, u: Tensor, target: Tensor | None = None, *, ignore_index: int = -100,
                         reduction: str = "mean") -> Tensor:
    """The eager reference (fp64 for fp64 inputs, else fp32). Shapes as :func:`softmax_ce_hvp`."""
    z, v, t = check_softmax_ce_args(logits, u, target, ignore_index, reduction)
    acc = torch.float64 if torch.float64 in (logits.dtype, u.dtype) else torch.float32
    w = _weights(t, ignore_index, reduction, z.shape[0], acc, z.device)
    return _expression(z.to(acc), v.to(acc), w).to(u.dtype).reshape(u.shape)


_compiled_expression = lazy_compile(_expression)


@dispatch.register("softmax_ce_hvp", "compiled", available=compile_unavailable)
def softmax_ce_compiled(logits: Tensor, u: Tensor, target: Tensor | None = None, *, ignore_index: int = -100,
                        reduction: str = "mean") -> Tensor:
    """:func:`softmax_ce_reference` fused by ``torch.compile`` (the first call compiles, seconds)."""
    z, v, t = check_softmax_ce_args(logits, u, target, ignore_index, reduction)
    acc = torch.float64 if torch.float64 in (logits.dtype, u.dtype) else torch.float32
    w = _weights(t, ignore_index, reduction, z.shape[0], acc, z.device)
    return _compiled_expression(z.to(acc), v.to(acc), w).to(u.dtype).reshape(u.shape)


def softmax_ce_hvp(logits: Tensor, u: Tensor, target: Tensor | None = None, *, ignore_index: int = -100,
                   reduction: str = "mean", impl: str | None = None) -> Tensor:
    """``H u`` for the softmax cross-entropy Hessian in the logits (see the module docstring).

    Args:
        logits: ``(…, V)``.
        u: ``(…, V)``, the vector (e.g. a Jacobian-vector product of the model output).
        target: ``(…)`` class indices, only to mask rows equal to ``ignore_index`` (None: all rows count).
        ignore_index: the target value of rows to ignore (``F.cross_entropy``'s default -100).
        reduction: ``"mean"`` (divide by the number of counted rows) or ``"sum"``.
        impl: implementation name (``"reference"``, ``"compiled"``, ``"triton"``) or None/``"auto"``.

    Returns:
        ``(…, V)`` in ``u``'s dtype.

    Example:
        >>> z = torch.randn(4, 10, dtype=torch.float64); u = torch.randn(4, 10, dtype=torch.float64)
        >>> y = torch.tensor([1, -100, 3, 0])
        >>> out = softmax_ce_hvp(z, u, y, impl="reference")
        >>> bool((out[1] == 0).all()), bool(out[0].sum().abs() < 1e-15)   # ignored row; rows of H sum to 0
        (True, True)
    """
    return dispatch.call("softmax_ce_hvp", logits, u, target, ignore_index=ignore_index, reduction=reduction, impl=impl)
