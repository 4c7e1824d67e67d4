"""Argument checks that several packages share; each raises a clear error naming the argument.

* :func:`check_float`: a ``torch.Tensor`` with a floating-point dtype (``TypeError`` otherwise);
* :func:`check_fraction`: a real number in ``[0, 1]`` or a narrower interval (``ValueError``);
* :func:`check_rank`: an ``int >= 1``, optionally ``<= min(shape)``;
* :func:`check_int`: an ``int`` at least some bound (sizes, counts);
* :func:`check_real`: a real, non-NaN number, optionally at least some bound (rates, tolerances);
* :func:`check_floats`: several floating-point tensors that must share a dtype and device;
* :func:`check_dim`: a dimension index in ``[-ndim, ndim)``.

Example:
    >>> import torch
    >>> check_float(torch.ones(2), "W").shape
    torch.Size([2])
    >>> check_fraction(0.25, "sparsity", high_open=True)
    0.25
"""

from __future__ import annotations

import math
import numbers

from torch import Tensor

__all__ = ["check_float", "check_floats", "check_fraction", "check_int", "check_real", "check_rank", "check_dim"]


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


def check_int(value: int, name: str, *, at_least: int = 1) -> int:
    """Return ``value``, raising ``TypeError`` unless it is an ``int`` (``bool`` refused) and
    ``ValueError`` unless it is ``>= at_least`` (sizes, counts, widths).

    Example:
        >>> check_int(3, "width")
        3
        >>> check_int(0, "width")
        Traceback (most recent call last):
        ...
        ValueError: width must be an int >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {at_least}, got {type(value).__name__}")
    if value < at_least:
        raise ValueError(f"{name} must be an int >= {at_least}, got {value}")
    return value


def check_real(value: float, name: str, *, at_least: float | None = None, above: float | None = None,
               finite: bool = False) -> float:
    """Return ``value`` as a float, raising ``TypeError`` unless it is a real number (``bool``
    refused) and ``ValueError`` if it is NaN, below ``at_least``, not ``> above``, or (``finite``)
    infinite. An infinite value passes unless ``finite`` or a bound excludes it.

    Example:
        >>> check_real(0.5, "lr", at_least=0.0)
        0.5
        >>> check_real(float("nan"), "damping", at_least=0.0)
        Traceback (most recent call last):
        ...
        ValueError: damping must be >= 0, got nan
    """
    bound = f" > {above:g}" if above is not None else "" if at_least is None else f" >= {at_least:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {'finite ' if finite else ''}real number{bound}, got {type(value).__name__}")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number{bound}, got {value!r}")
    if math.isnan(v) or (at_least is not None and v < at_least) or (above is not None and not v > above):
        raise ValueError(f"{name} must be {bound.strip() or 'a number, not NaN'}, got {value}")
    return v


def check_floats(tensors: dict[str, Tensor], *, nonempty: bool = True, finite: bool = False) -> tuple[Tensor, ...]:
    """Return the tensors of ``tensors`` (name -> tensor) in order, raising unless each is a
    floating-point tensor with the dtype and device of the first (``TypeError`` / ``ValueError``
    naming it); with ``nonempty`` an empty tensor, with ``finite`` a NaN/inf entry, is refused.

    Example:
        >>> import torch
        >>> L, R = check_floats({"L": torch.ones(3, 2), "R": torch.ones(4, 2)})
        >>> check_floats({"L": L, "R": R.double()})
        Traceback (most recent call last):
        ...
        TypeError: R must have the dtype of L (torch.float32), got torch.float64 (nothing is cast)
    """
    first = None
    for name, x in tensors.items():
        check_float(x, name)
        if first is None:
            first = name, x
        elif x.dtype != first[1].dtype:
            raise TypeError(f"{name} must have the dtype of {first[0]} ({first[1].dtype}), got {x.dtype} (nothing is cast)")
        elif x.device != first[1].device:
            raise ValueError(f"{name} must be on the device of {first[0]} ({first[1].device}), got {x.device}")
        if nonempty and x.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
        if finite and not bool(x.isfinite().all()):
            raise ValueError(f"{name} must be finite (it has NaN or inf entries)")
    return tuple(tensors.values())


def check_rank(rank: int, shape: tuple[int, ...] | None = None, *, name: str = "rank", at_most_min: bool = False) -> int:
    """Return ``rank``, raising unless it is an ``int >= 1`` (``TypeError`` / ``ValueError``) and,
    with ``at_most_min``, ``<= min(shape)`` (truncated SVDs, orthonormal factors).

    Example:
        >>> check_rank(3, (5, 4), at_most_min=True)
        3
    """
    check_int(rank, name)
    if at_most_min and shape is not None and rank > min(shape):
        raise ValueError(f"{name} must be <= min{tuple(shape)} = {min(shape)} here, got {rank}")
    return rank


def check_dim(dim: int | None, ndim: int, *, default: int | None = None, argname: str = "dim") -> int:
    """``dim`` as an index in ``[0, ndim)``; ``None`` gives ``default``. Refuses (``ValueError``
    naming ``argname``) a dim outside ``[-ndim, ndim)`` instead of wrapping it modulo ``ndim``.

    Example:
        >>> check_dim(-1, 3), check_dim(None, 1, default=0)
        (2, 0)
    """
    check_int(ndim, "ndim", at_least=0)
    if dim is None:
        dim = default
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{argname} must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{argname}={dim} is out of range for a tensor with ndim={ndim} dimension(s)")
    return dim % ndim
