"""What the wrappers need to know about the layers they wrap, from :mod:`overparam.backend.layers`.

A weight is seen as the matrix ``(rows, cols)`` its layer computes with (``Layout.as_matrix``):
Linear ``(out, in)``; ConvNd ``(out, in/groups · ∏kernel)``; transformers' ``Conv1D`` (stored
``(in, out)``) ``(out, in)`` = ``w.T``; Embedding ``(num_embeddings, embedding_dim)``. Every
kind registered with ``factor=True`` is wrapped.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..backend.layers import Layout, kind_of, layer_types

_WHAT = "nn.Linear, nn.Conv1d/2d/3d, nn.Embedding or transformers' Conv1D (or a kind registered with factor=True)"


def supported_types() -> tuple[type, ...]:
    """The module classes the wrappers accept now (for ``select(types=...)``)."""
    return layer_types("factor")


def layout(base: nn.Module, name: str = "base") -> Layout:
    """The layout of ``base.weight``; ``TypeError`` naming ``name`` unless its kind is wrappable."""
    kind = kind_of(base) if isinstance(base, nn.Module) else None
    if kind is None or not kind.factor:
        raise TypeError(f"{name} must be an {_WHAT}, got {type(base).__name__}")
    return kind.weights["weight"]


def check_supported(base: nn.Module, name: str = "base") -> None:
    layout(base, name)


def matrix_shape(base: nn.Module, shape: tuple[int, ...] | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the base layer's weight (of ``shape``, default its own) seen as a matrix."""
    shape = tuple(base.weight.shape if shape is None else shape)
    rows = shape[layout(base).out_dim]
    return rows, math.prod(shape) // rows


def as_matrix(base: nn.Module, w: Tensor) -> Tensor:
    """``w`` (the base's stored weight shape) as the ``(rows, cols)`` matrix; a view."""
    return layout(base).as_matrix(w)


def from_matrix(base: nn.Module, M: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``M`` back in the stored ``shape``. ``M`` is the ``(rows, cols)`` matrix, or — for a layout
    that is not transposed — any tensor of ``shape``'s size (an element-wise weight module)."""
    lay = layout(base)
    if lay.transposed:
        if tuple(M.shape) != matrix_shape(base, shape):
            raise ValueError(f"a weight module of a transposed layer ({type(base).__name__}) must return the "
                             f"(rows, cols) = {matrix_shape(base, shape)} matrix, got {tuple(M.shape)}")
        return lay.from_matrix(M, shape)
    return M.reshape(shape)


def call(base: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The base layer's forward with ``weight`` (its own shape) and ``bias`` swapped in."""
    return layout(base).call(base, x, weight, bias)


def bias_shape(base: nn.Module) -> tuple[int, ...]:
    """Shape that broadcasts a per-row vector ``(rows,)`` against the layer's output."""
    lay = layout(base)
    if lay.table:
        raise TypeError("an Embedding's rows are tokens, not output features")
    if lay.linear_like:
        return (-1,)
    return (-1,) + (1,) * (len(base.weight.shape) - 2)
