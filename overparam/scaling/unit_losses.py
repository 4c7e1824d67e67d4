"""Unit-scaled losses (u-μP): cross-entropy and mean squared error, part of :mod:`overparam.scaling.unit_ops`.

Example:
    >>> import torch
    >>> float(mse_loss(torch.ones(4), torch.zeros(4)))
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backend.checks import check_float
from .unit_scale import _mult, _Scale

__all__ = ["cross_entropy", "mse_loss"]


def _reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


def cross_entropy(input: Tensor, target: Tensor, *, reduction: str = "mean", mult: float = 1.0) -> Tensor:
    """Unit-scaled cross-entropy of logits ``(B, V)`` or ``(V,)`` (α_loss-softmax = ``mult``):
    logit gradients ``×V/√(V-1)``, the sum over the batch then ``×1/B`` in the forward only.

    Example:
        >>> round(float(cross_entropy(torch.zeros(2, 4), torch.tensor([0, 1]))), 6)  # log 4
        1.386294
    """
    check_float(input, "input")
    if input.ndim not in (1, 2) or input.shape[-1] < 2:
        raise ValueError(f"input must be logits (B, V) or (V,) with V >= 2, got shape {tuple(input.shape)}")
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.shape != input.shape[:-1]:
        raise ValueError(f"target must be int64 class indices of shape {tuple(input.shape[:-1])}, got "
                         f"{tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}")
    _reduction(reduction)
    m = _mult(mult)
    batch, vocab = (1, input.shape[0]) if input.ndim == 1 else input.shape
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= vocab):
        raise ValueError(f"target classes must lie in [0, {vocab})")
    logits = _Scale.apply(input, m, vocab / (vocab - 1) ** 0.5)
    loss = F.cross_entropy(logits, target, reduction="sum")
    return _Scale.apply(loss, 1 / batch, 1.0) if reduction == "mean" else loss


def mse_loss(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Unit-scaled mean squared error: gradients ``×8^-1/2`` (of the summed loss, unit RMS for
    unit-RMS independent input and target), the sum then ``×1/numel`` in the forward only.

    Example:
        >>> float(mse_loss(torch.ones(4), torch.zeros(4)))
        1.0
    """
    check_float(input, "input")
    check_float(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"input and target must have the same shape, got {tuple(input.shape)} and "
                         f"{tuple(target.shape)}")
    _reduction(reduction)
    s = 8 ** -0.5
    loss = F.mse_loss(_Scale.apply(input, 1.0, s), _Scale.apply(target, 1.0, s), reduction="sum")
    return _Scale.apply(loss, 1 / max(input.numel(), 1), 1.0) if reduction == "mean" else loss
