"""The opt-in check for non-finite gradients shared by every optimizer in overparam.optim.

By default a NaN or inf in a gradient is not looked for, as in torch's own optimizers: it
propagates into the parameters it touches (ScaledGD-type steps spread it across the whole
factor through the r×r solve) and, for the Polyak rules, into the step size. With
``check_finite=True`` (a constructor argument and a per-group hyperparameter) ``step()`` first
checks every gradient of those groups and raises :class:`NonFiniteGradientError` naming the
parameter, before any parameter or optimizer state changes. The check costs one reduction and
one device sync per tensor per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

__all__ = ["NonFiniteGradientError", "check_finite_flag", "check_finite_grads"]


class NonFiniteGradientError(ValueError):
    """A gradient holds NaN or inf (raised by ``step()`` of an optimizer built with ``check_finite=True``).

    A ``ValueError``; the message names the parameter (for pair optimizers the pair and factor).

    Example:
        >>> from overparam.optim import ScaledGD
        >>> X = torch.ones(3, 1, requires_grad=True)
        >>> opt = ScaledGD([X], check_finite=True)
        >>> X.grad = torch.tensor([[0.0], [float("inf")], [0.0]])
        >>> try:
        ...     opt.step()
        ... except NonFiniteGradientError as e:
        ...     print(e)
        ScaledGD: the gradient of factor X of pairs[0] in param group 0 (shape (3, 1)) holds 0 NaN and 1 inf entries; nothing was updated
        >>> X.detach().flatten().tolist()  # unchanged
        [1.0, 1.0, 1.0]
    """


def check_finite_flag(value) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``check_finite``.

    Example:
        >>> check_finite_flag(True)
        True
    """
    if not isinstance(value, bool):
        raise TypeError(f"check_finite must be a bool, got {type(value).__name__}")
    return value


def _default_name(gi: int, group: dict, i: int) -> str:
    return f"param_groups[{gi}]['params'][{i}]"


def check_finite_grads(opt: Optimizer, describe: Callable[[int, dict, int], str] = _default_name, *,
                       every_group: bool = False) -> None:
    """Raise :class:`NonFiniteGradientError` for the first gradient holding NaN or inf in a group
    whose ``check_finite`` is True (every group with ``every_group=True``, for a wrapper around an
    optimizer that has no such key); the message names the parameter (``describe(group index,
    group, index in group["params"])``), its shape and what was found. Changes nothing.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([{"params": [p], "check_finite": True}], lr=0.1)
        >>> p.grad = torch.tensor([1.0, float("nan")])
        >>> check_finite_grads(opt)
        Traceback (most recent call last):
        ...
        overparam.optim._finite.NonFiniteGradientError: SGD: the gradient of param_groups[0]['params'][0] (shape (2,)) holds 1 NaN and 0 inf entries; nothing was updated
    """
    for gi, group in enumerate(opt.param_groups):
        if not (every_group or group.get("check_finite", False)):
            continue
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            v = g.coalesce().values() if g.is_sparse else g
            if bool(torch.isfinite(v).all()):
                continue
            nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
            raise NonFiniteGradientError(
                f"{type(opt).__name__}: the gradient of {describe(gi, group, i)} (shape {tuple(p.shape)}) holds "
                f"{nan} NaN and {inf} inf entries; nothing was updated")
