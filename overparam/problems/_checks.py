"""Argument checks shared by the problems: factors handed to a problem's ``loss``.

A problem is built in one dtype and on one device (float64 by default); the factors given to
its ``loss`` / ``relative_error`` must match them and the problem's shapes. Nothing is cast or
reshaped: a float32 factor for a float64 problem is a ``TypeError`` that says which argument
and which dtype is expected, a wrong shape a ``ValueError`` that says which shape is.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_tensor", "check_factors"]


def check_tensor(t, name: str, shape: tuple, like: Tensor, *, batched: bool = False) -> Tensor:
    """``t`` if it is a tensor of ``shape`` (``None`` entries are free; with ``batched`` any
    leading dimensions are allowed) with the dtype and device of ``like``.

    Example:
        >>> like = torch.zeros(4, 2, dtype=torch.float64)
        >>> check_tensor(torch.ones(4, 3, dtype=torch.float64), "X", (4, None), like).shape
        torch.Size([4, 3])
        >>> check_tensor(torch.ones(4, 3), "X", (4, None), like)
        Traceback (most recent call last):
        ...
        TypeError: X must have the problem's dtype torch.float64, got torch.float32 (nothing is cast: convert it)
    """
    want = "(" + ", ".join("k" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
    if batched:
        want = "(..., " + want[1:]
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor of shape {want}, got {type(t).__name__}")
    tail = tuple(t.shape[-len(shape):]) if t.ndim >= len(shape) else None
    if (t.ndim != len(shape) and not (batched and t.ndim > len(shape))) or tail is None \
            or any(s is not None and s != a for s, a in zip(shape, tail)):
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} must have the problem's dtype {like.dtype}, got {t.dtype} (nothing is cast: convert it)")
    if t.device != like.device:
        raise ValueError(f"{name} must be on the problem's device {like.device}, got {t.device}")
    return t


def check_factors(X, shape: tuple[int, int], symmetric: bool, like: Tensor, *, name: str = "X",
                  batched: bool = False) -> tuple[Tensor, Tensor]:
    """``(L, R)`` from ``X``: a tuple ``(L (n1, k), R (n2, k))``, or for a symmetric problem a lone
    ``X (n, k)`` (returned as ``(X, X)``); shapes, dtype and device checked against the problem.

    Example:
        >>> like = torch.zeros(5, 3, dtype=torch.float64)
        >>> L, R = check_factors((torch.ones(5, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)),
        ...                      (5, 3), False, like)
        >>> L.shape, R.shape
        (torch.Size([5, 2]), torch.Size([3, 2]))
    """
    n1, n2 = shape
    if isinstance(X, tuple):
        if len(X) != 2:
            raise TypeError(f"{name} must be a pair (L, R) of factors, got a tuple of length {len(X)}")
        L = check_tensor(X[0], f"{name}[0] (L)", (n1, None), like, batched=batched)
        R = check_tensor(X[1], f"{name}[1] (R)", (n2, None), like, batched=batched)
        if L.shape[-1] != R.shape[-1]:
            raise ValueError(f"{name}: L {tuple(L.shape)} and R {tuple(R.shape)} must have the same rank k")
        return L, R
    if isinstance(X, Tensor):
        if not symmetric:
            raise TypeError(f"{name}: this problem is asymmetric: pass the factors as a tuple (L, R)")
        return check_tensor(X, name, (n1, None), like, batched=batched), X
    raise TypeError(f"{name} must be a factor tensor X (n, k) or a tuple (L, R), got {type(X).__name__}")
