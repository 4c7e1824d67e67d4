"""Argument checks that several packages share; each raises a clear error naming the argument.

* :func:`check_float`: a ``torch.Tensor`` with a floating-point dtype (``TypeError`` otherwise);
* :func:`check_fraction`: a real number in ``[0, 1]`` or a narrower interval (``ValueError``);
* :func:`check_rank`: an ``int >= 1``, optionally ``<= min(shape)``.

Example:
    >>> import torch
    >>> check_float(torch.ones(2), "W").shape
    torch.Size([2])
    >>> check_fraction(0.25, "sparsity", high_open=True)
    0.25
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_float", "check_fraction", "check_rank"]


def check_float(x: Tensor, name: str) -> Tensor:
    """Return ``x`` unchanged, raising ``TypeError`` unless it is a floating-point tensor.

    Args:
        x: the argument to check (any shape).
        name: how the error message calls it (e.g. ``"W"`` or ``"pairs[0]: L"``).

    Example:
        >>> import torch
        >>> check_float(torch.ones(2, dtype=torch.int64), "scores")
        Traceback (most recent call last):
        ...
        TypeError: scores must be a floating-point tensor, got torch.int64
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_fraction(value: float, name: str, *, low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float, raising unless it is a real number in ``[0, 1]``;
    ``low_open`` / ``high_open`` exclude 0 / 1.

    Raises:
        TypeError: not a real number (``bool`` included).
        ValueError: outside the interval (the message shows it).

    Example:
        >>> check_fraction(1.0, "density", low_open=True)
        1.0
        >>> check_fraction(1.0, "sparsity", high_open=True)
        Traceback (most recent call last):
        ...
        ValueError: sparsity must be in [0, 1), got 1.0
    """
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in {interval}, got {type(value).__name__}")
    v = float(value)
    if not ((0.0 < v if low_open else 0.0 <= v) and (v < 1.0 if high_open else v <= 1.0)):
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return v


def check_rank(rank: int, shape: tuple[int, ...] | None = None, *, name: str = "rank", at_most_min: bool = False) -> int:
    """Return ``rank``, raising unless it is an ``int >= 1`` (``TypeError`` / ``ValueError``) and,
    with ``at_most_min``, ``<= min(shape)`` (truncated SVDs, orthonormal factors).

    Example:
        >>> check_rank(3, (5, 4), at_most_min=True)
        3
    """
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"{name} must be an int, got {type(rank).__name__}")
    if rank <= 0:
        raise ValueError(f"{name} must be >= 1, got {rank}")
    if at_most_min and shape is not None and rank > min(shape):
        raise ValueError(f"{name} must be <= min{tuple(shape)} = {min(shape)} here, got {rank}")
    return rank
