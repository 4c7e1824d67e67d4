"""How a layer's stored weight maps to the matrix ``(out, in·∏kernel)`` it computes with.

:class:`Layout` is the per-weight half of the layer-kind registry (:mod:`overparam.backend.layers`,
which re-exports it): ``as_matrix`` / ``from_matrix``, the input dimension N:M groups run along,
the fans, and the layer's forward with a weight swapped in. :data:`LINEAR` (``nn.Linear``,
``(out, in)``) and :data:`TRANSPOSED_LINEAR` (transformers' ``Conv1D``, ``(in, out)``) are the two
Linear-like layouts.

Example:
    >>> LINEAR.in_dim, TRANSPOSED_LINEAR.in_dim, TRANSPOSED_LINEAR.fans((3, 2))
    (1, 0, (3, 2))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Layout", "LINEAR", "TRANSPOSED_LINEAR", "CONV", "TABLE", "PACKED"]


@dataclass(frozen=True)
class Layout:
    """How one stored weight maps to the matrix ``(out, in·∏kernel)`` its layer computes with.

    Attributes:
        transposed: the storage is ``(in, out, *kernel)`` (transformers' ``Conv1D``, transposed
            convolutions) instead of ``(out, in, *kernel)``.
        table: an embedding table ``(num, dim)``: :meth:`as_matrix` is the table itself (rows are
            tokens) and the fans are ``(num, dim)``, as torch and μP count them.
        linear_like: the layer computes ``x @ as_matrix(w).T + b`` on the last dimension of ``x``
            (Linear, ``Conv1D``): fused low-rank paths ``x @ V @ Uᵀ`` apply.
        forward: ``forward(module, x, weight, bias) -> output``, the layer's computation with
            ``weight`` (stored shape) and ``bias`` swapped in; ``None`` when the weight cannot be
            swapped (an attention's packed projection).

    Example:
        >>> w = torch.arange(6.).reshape(3, 2)               # a Conv1D weight: in=3, out=2
        >>> TRANSPOSED_LINEAR.as_matrix(w).shape, TRANSPOSED_LINEAR.in_dim, TRANSPOSED_LINEAR.fans(w.shape)
        (torch.Size([2, 3]), 0, (3, 2))
        >>> torch.equal(TRANSPOSED_LINEAR.from_matrix(TRANSPOSED_LINEAR.as_matrix(w), w), w)
        True
    """

    transposed: bool = False
    table: bool = False
    linear_like: bool = False
    forward: Callable | None = field(default=None, compare=False)

    def __post_init__(self):
        _check_bools(self, ("transposed", "table", "linear_like"))
        if self.forward is not None and not callable(self.forward):
            raise TypeError(f"forward must be callable or None, got {type(self.forward).__name__}")
        if self.table and self.transposed:
            raise ValueError("a Layout is a table or transposed, not both")

    @property
    def in_dim(self) -> int:
        """The storage dimension of the computation's input features (N:M groups run along it;
        for a table: the embedding dimension)."""
        return 0 if self.transposed else 1

    @property
    def out_dim(self) -> int:
        """The storage dimension of the computation's output features (a table: the tokens)."""
        return 1 if self.transposed else 0

    def as_matrix(self, w: Tensor) -> Tensor:
        """The stored weight ``w`` as the matrix ``(out, in·∏kernel)`` (a view where the storage
        allows, always for 2-D weights: writing into it writes the weight)."""
        _check_weight(w)
        if self.transposed:
            return w.movedim(1, 0).reshape(w.shape[1], -1)
        return w.reshape(w.shape[0], -1)

    def from_matrix(self, M: Tensor, like) -> Tensor:
        """Inverse of :meth:`as_matrix`: the matrix ``M`` back in the stored shape of ``like`` (a
        tensor or a shape)."""
        shape = tuple(like.shape if isinstance(like, Tensor) else like)
        if not isinstance(M, Tensor) or M.ndim != 2:
            raise TypeError(f"M must be a 2-D tensor, got {getattr(M, 'shape', type(M).__name__)}")
        if len(shape) < 2:
            raise ValueError(f"like must be a weight of at least 2 dimensions, got shape {shape}")
        if self.transposed:
            return M.reshape(shape[1], shape[0], *shape[2:]).movedim(0, 1)
        return M.reshape(shape)

    def fans(self, shape) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of a stored weight of ``shape`` (≥ 2 dims)."""
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"shape must have at least 2 dimensions, got {shape}")
        if self.table:
            return shape[0], shape[1]
        rf = math.prod(shape[2:])
        i, o = (0, 1) if self.transposed else (1, 0)
        return shape[i] * rf, shape[o] * rf

    def call(self, module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``module``'s computation on ``x`` with ``weight`` and ``bias`` swapped in."""
        if self.forward is None:
            raise TypeError(f"{type(module).__name__}: this weight cannot be swapped into its layer's forward")
        return self.forward(module, x, weight, bias)


def _check_bools(obj, names) -> None:
    for n in names:
        if not isinstance(getattr(obj, n), bool):
            raise TypeError(f"{n} must be a bool, got {type(getattr(obj, n)).__name__}")


def _check_weight(w) -> None:
    if not isinstance(w, Tensor) or w.ndim < 2:
        raise TypeError(f"w must be a weight tensor of at least 2 dimensions, got {getattr(w, 'shape', type(w).__name__)}")


def _linear(module, x, weight, bias):
    return F.linear(x, weight, bias)


def _conv(module, x, weight, bias):
    return module._conv_forward(x, weight, bias)


def _embedding(module, x, weight, bias):
    out = F.embedding(x, weight, module.padding_idx, module.max_norm, module.norm_type, module.scale_grad_by_freq,
                      module.sparse)
    return out if bias is None else out + bias


def _transposed_linear(module, x, weight, bias):
    """transformers' ``Conv1D.forward``: ``addmm(bias, x, weight)`` on the last dimension."""
    x2 = x.reshape(-1, x.shape[-1])
    out = x2 @ weight if bias is None else torch.addmm(bias, x2, weight)
    return out.view(*x.shape[:-1], weight.shape[1])


LINEAR = Layout(linear_like=True, forward=_linear)
"""The layout of ``nn.Linear.weight`` ``(out, in)``: reuse it for a Linear-like module of your own."""
TRANSPOSED_LINEAR = Layout(transposed=True, linear_like=True, forward=_transposed_linear)
"""The layout of transformers' ``Conv1D.weight`` ``(in, out)``: ``y = x @ w + b``."""
CONV = Layout(forward=_conv)
"""The layout of ``nn.Conv1d/2d/3d.weight`` ``(out, in/groups, *kernel)``."""
TABLE = Layout(table=True, forward=_embedding)
"""The layout of ``nn.Embedding.weight`` ``(num, dim)``."""
PACKED = Layout()
"""An attention's packed projection ``(out, in)`` (``nn.MultiheadAttention.in_proj_weight``): not swappable."""
