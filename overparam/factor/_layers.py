"""What the wrappers need to know about the layer types they wrap (Linear, ConvNd, Embedding).

A weight is seen as a matrix ``(rows, cols)``: Linear ``(out, in)``; ConvNd
``(out, in/groups · ∏kernel)``; Embedding ``(num_embeddings, embedding_dim)``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def check_supported(base: nn.Module, name: str = "base") -> None:
    if not isinstance(base, SUPPORTED):
        raise TypeError(f"{name} must be an nn.Linear, nn.Conv1d/2d/3d or nn.Embedding, got {type(base).__name__}")


def matrix_shape(base: nn.Module) -> tuple[int, int]:
    """``(rows, cols)`` of the base layer's weight seen as a matrix."""
    w = base.weight
    return w.shape[0], math.prod(w.shape[1:])


def call(base: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The base layer's forward with ``weight`` (its own shape) and ``bias`` swapped in."""
    if isinstance(base, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(base, nn.Embedding):
        out = F.embedding(x, weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq,
                          base.sparse)
        return out if bias is None else out + bias
    return base._conv_forward(x, weight, bias)


def bias_shape(base: nn.Module) -> tuple[int, ...]:
    """Shape that broadcasts a per-row vector ``(rows,)`` against the layer's output."""
    if isinstance(base, nn.Linear):
        return (-1,)
    if isinstance(base, nn.Embedding):
        raise TypeError("an Embedding's rows are tokens, not output features")
    return (-1,) + (1,) * (base.weight.ndim - 2)
