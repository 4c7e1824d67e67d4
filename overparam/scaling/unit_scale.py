"""The base of the unit-scaled ops: a scale applied separately in the forward and the backward
pass, and the constraints that tie an op's scales (see :mod:`overparam.scaling.unit_ops`).

Example:
    >>> import torch
    >>> x = torch.ones(2, requires_grad=True)
    >>> y = _Scale.apply(x, 2.0, 3.0)         # forward ×2, backward ×3
    >>> y.sum().backward(); y.detach(), x.grad
    (tensor([2., 2.]), tensor([3., 3.]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..backend.checks import check_float, check_real

__all__ = ["CONSTRAINTS", "scale_fwd", "scale_bwd"]

#: how an op's output and input-gradient scales are tied: equal to the output scale, to the
#: input-gradient scale, their geometric mean, or None (separate: a "cut" edge, e.g. the read-out)
CONSTRAINTS = ("to_output_scale", "to_grad_input_scale", "gmean", None)


def _scale(x, name: str) -> float:
    return check_real(x, name, above=0.0, finite=True)


def _constrain(constraint, out: float, *grads: float) -> tuple[float, ...]:
    """Apply ``constraint`` to ``(output scale, *input-gradient scales)``."""
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
    if constraint is None:
        return (out, *grads)
    if constraint == "to_output_scale":
        s = out
    elif constraint == "to_grad_input_scale":
        if len(grads) != 1:
            raise ValueError(f"constraint='to_grad_input_scale' needs one input gradient, this op has {len(grads)}")
        s = grads[0]
    else:
        s = math.prod((out, *grads)) ** (1 / (1 + len(grads)))
    return (s,) * (1 + len(grads))


class _Scale(torch.autograd.Function):
    """``y = fwd·x`` whose backward is ``bwd·g``."""

    @staticmethod
    def forward(ctx, x: Tensor, fwd: float, bwd: float) -> Tensor:
        ctx.bwd = bwd
        return x * fwd if fwd != 1 else x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        return (g * ctx.bwd if ctx.bwd != 1 else g), None, None


def scale_fwd(input: Tensor, scale: float) -> Tensor:
    """``scale · input`` in the forward pass, the gradient passed through unscaled.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_fwd(x, 3.0).sum().backward(); x.grad
        tensor([1., 1.])
    """
    check_float(input, "input")
    return _Scale.apply(input, _scale(scale, "scale"), 1.0)


def scale_bwd(input: Tensor, scale: float) -> Tensor:
    """``input`` unchanged in the forward pass, its gradient multiplied by ``scale``.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_bwd(x, 3.0).sum().backward(); x.grad
        tensor([3., 3.])
    """
    check_float(input, "input")
    return _Scale.apply(input, 1.0, _scale(scale, "scale"))


def _loginterp(alpha: float, lower: float, upper: float) -> float:
    """``lower^(1-alpha) · upper^alpha``."""
    return math.exp(alpha * math.log(upper) + (1 - alpha) * math.log(lower))



def _mult(mult) -> float:
    return check_real(mult, "mult", above=0.0, finite=True)




def _same_dtype(**tensors: Tensor | None) -> None:
    """Refuse tensors of different dtypes, naming them (torch would fail deep inside the op)."""
    given = {k: t.dtype for k, t in tensors.items() if t is not None}
    if len(set(given.values())) > 1:
        raise TypeError(f"{', '.join(given)} must have one dtype, got {given}")
