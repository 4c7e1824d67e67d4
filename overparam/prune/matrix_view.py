"""A layer as a matrix: the weight ``W (out, d)`` and the input rows ``x (d,)`` it acts on.

One-shot pruning from calibration data (:mod:`~overparam.prune.calibrate`) treats every layer as
``y = x Wᵀ`` on rows ``x``. The stored weight ↔ matrix conversion is the layer-kind registry's
(:mod:`overparam.backend.layers`, ``Layout.as_matrix`` / ``from_matrix``); this module adds the
input side and one column order:

* ``nn.Linear`` ``(out, in)`` and transformers' ``Conv1D`` ``(in, out)`` (GPT-2): rows are the
  inputs flattened to ``(-1, in)``;
* ``nn.Conv1d/2d/3d`` (``groups=1``; any stride, padding, padding mode, dilation): rows are the
  unfolded input patches, and the matrix's columns are ordered (kernel position, input channel)
  (``o c *k -> o (*k c)``), so consecutive columns are consecutive input channels at one
  kernel position, the N:M grouping of :func:`overparam.prune.nm_mask`.

``layer(x) = input_rows(layer, x) @ weight_matrix(layer).T + bias`` (reshaped).

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2)
    >>> weight_matrix(lin).shape, input_rows(lin, torch.ones(4, 5, 3)).shape
    (torch.Size([2, 3]), torch.Size([20, 3]))
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor, nn

from ..backend.layers import Layout, kind_of, layout_of
from ..backend.patches import conv_rows

__all__ = ["weight_matrix", "input_rows"]


def _layout(module: nn.Module, name: str = "") -> Layout:
    """The registered layout of ``module.weight``, refusing the kinds calibration cannot prune."""
    kind, lay = kind_of(module), layout_of(module, "weight")
    if lay is None or not (lay.linear_like or kind.name == "conv"):
        raise TypeError(f"targets: {name!r} is a {type(module).__name__}; calibration prunes Linear, Conv1d/2d/3d "
                        "and Conv1D (GPT-2) layers")
    if not lay.linear_like and module.groups != 1:
        raise ValueError(f"targets: {name!r} is a grouped convolution (groups={module.groups}); only groups=1 "
                         "is supported")
    return lay


def weight_matrix(module: nn.Module) -> Tensor:
    """The layer's weight as a matrix ``(out, d)``: the registry's ``as_matrix``
    (:mod:`overparam.backend.layers`), with a convolution's columns ordered (kernel position,
    channel) so that consecutive columns are consecutive input channels.

    Example:
        >>> weight_matrix(torch.nn.Conv2d(3, 5, 2)).shape
        torch.Size([5, 12])
    """
    return _weight_to_matrix(module, module.weight.detach())


def _weight_to_matrix(module: nn.Module, T: Tensor) -> Tensor:
    """A tensor of the weight's stored shape (weights or a mask) as the matrix ``(out, d)`` of :func:`weight_matrix`."""
    lay = _layout(module, type(module).__name__)
    M = lay.as_matrix(T)
    return M if lay.linear_like else einops.rearrange(M, "o (c k) -> o (k c)", c=module.weight.shape[1])


def _matrix_to_weight(module: nn.Module, M: Tensor) -> Tensor:
    """A matrix ``(out, d)`` (weights or a mask) in the weight's stored shape (the inverse of :func:`weight_matrix`)."""
    lay = _layout(module)
    if not lay.linear_like:
        M = einops.rearrange(M, "o (k c) -> o (c k)", c=module.weight.shape[1])
    return lay.from_matrix(M, module.weight)


def _set_weight_matrix_(module: nn.Module, W: Tensor) -> None:
    """Write ``W (out, d)`` into ``module.weight``."""
    with torch.no_grad():
        module.weight.copy_(_matrix_to_weight(module, W).to(module.weight.dtype))


def input_rows(module: nn.Module, x: Tensor) -> Tensor:
    """The input rows ``(rows, d)`` of a layer called on ``x``: ``module(x)`` equals
    ``input_rows(module, x) @ weight_matrix(module).T`` (+ bias), reshaped.

    Example:
        >>> conv = torch.nn.Conv1d(2, 3, 3, padding=1, bias=False)
        >>> x = torch.randn(4, 2, 5)
        >>> y = input_rows(conv, x) @ weight_matrix(conv).T          # (4·5, 3)
        >>> torch.allclose(y.reshape(4, 5, 3).transpose(1, 2), conv(x), atol=1e-6)
        True
    """
    lay = _layout(module, type(module).__name__)
    if lay.linear_like:
        d = module.weight.shape[lay.in_dim]
        if x.ndim < 1 or x.shape[-1] != d:
            raise ValueError(f"x has shape {tuple(x.shape)}; the layer needs (..., {d})")
        return x.reshape(-1, d)
    return conv_rows(module, x, order="kernel_major")          # (b·L, k·c)


